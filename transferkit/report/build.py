"""`report.html`: everything about a run on one self-contained page (jinja2 template).

Images are embedded as data URIs and the styles are inline, so the file opens offline,
can be mailed, and reads on a phone as on a laptop.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from transferkit import layout
from transferkit.fileio import write_text
from transferkit.report import sections
from transferkit.report.model_card import write_model_card
from transferkit.run import Run, load_run

TEMPLATE = "template.html.j2"


def render(run: Run) -> str:
    """The report of a finished run, as HTML.

    Args:
        run: The run (read through its accessors).

    Returns:
        One HTML document.
    """
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
        lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    config = run.config
    context = {
        "title": f"transferkit run · {run.path.name}",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run_path": str(run.path), "data": str(config.data),
        "backbone": config.backbone, "weights": config.weights,
        "image_size": run.image_size, "classes": run.class_names,
        "metrics": run.metrics or {}, "plan": run.plan or {},
        "data_section": sections.data_section(run),
        "issues": sections.issues_section(run),
        "training": sections.training_section(run),
        "confusion": sections.confusion_section(run),
        "per_class": _per_class(run),
        "wrong": sections.wrong_section(run),
        "export": None, "calibration": None, "embedding": None,  # optional
        **sections.optional_sections(run),
    }
    return environment.get_template(TEMPLATE).render(**context)


def _per_class(run: Run) -> str | None:
    table = run.per_class
    return None if table is None else sections.html_table(table)


def write_run_report(run: Run | str | os.PathLike, out: str | os.PathLike | None = None
                     ) -> Path:
    """Writes the run's `report.html` and `MODEL_CARD.md` (atomically).

    Args:
        run: A finished run directory, or its `Run`.
        out: The file to write (default `RUN/report.html`).

    Returns:
        The path written.

    Raises:
        RunError: Not a finished run directory.
    """
    run = run if isinstance(run, Run) else load_run(run)
    path = Path(out) if out is not None else run.path / layout.REPORT_FILE
    write_text(path, render(run))
    write_model_card(run)  # MODEL_CARD.md beside it, always in the run directory
    return path
