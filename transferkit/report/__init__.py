"""The run report: `report.html`, one self-contained page about a run (`transferkit report`).

    from transferkit.report import write_run_report
    write_run_report("runs/flowers")          # → runs/flowers/report.html

`plots` draws the figures (also the demo's Model tab), `pictures` embeds images,
`sections` gathers each section from the `Run`, `build` renders the jinja2 template,
`model_card` writes `MODEL_CARD.md` (Hugging Face's format) beside it.
"""

from transferkit.report.build import render, write_run_report
from transferkit.report.model_card import write_model_card

__all__ = ["render", "write_model_card", "write_run_report"]
