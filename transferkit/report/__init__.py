"""The run report: `report.html`, one self-contained page about a run (`transferkit report`).

    from transferkit.report import write_run_report
    write_run_report("runs/flowers")          # → runs/flowers/report.html

`plots` draws the figures (also the demo's Model tab), `pictures` embeds images,
`sections` gathers each section from the `Run`, `build` renders the jinja2 template.
"""

from transferkit.report.build import render, write_run_report

__all__ = ["render", "write_run_report"]
