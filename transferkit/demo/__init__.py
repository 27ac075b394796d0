"""The web demo: a trained classifier in the browser, with heat maps, and an HTTP API.

    transferkit serve runs/flowers               # → http://127.0.0.1:7860
    python apps/gradio_app.py runs/flowers       # the same command, as a script

`build_demo(path)` returns the `gradio.Blocks` app; `launch` serves it with safe
defaults; the command line is `transferkit serve`. `path` is a run directory (trained
from a folder or from `tfds:NAME`), or an export (`RUN/export/saved_model`, a `.tflite`
file) served by `transferkit.predictor`.

Two tabs:

- **Classify**: an image (upload, paste or webcam) → the top classes and a heat map of
  the chosen class (Grad-CAM by default) beside the original; clickable examples from
  the run's test split.
- **Model**: backbone, plan (frozen or fine-tuned, and why), dataset counts, test
  metrics, per-class table, confusion matrix and the most confidently wrong test
  images with their Grad-CAM heat maps; the feedback saved so far.

Under a prediction, "Wrong? The right class is [...]" saves the image into
`feedback/<class>/` of the run directory, only when the visitor presses the button
(`feedback`; docs/feedback.md folds the folder into the training data).

API (pinned names, for `gradio_client`):

- `/predict`: image → label confidences.
- `/explain`: image, method (a name of `transferkit.explain.METHODS`), class name
  ("" = the top prediction) → (heat map overlaid on the image, label confidences).

Safety: logins with `auth` (`access`), a one-line warning when reachable from other
machines without them, the heavy Inside-tab views refused when busy; binds 127.0.0.1
unless told otherwise, no share link unless asked, uploads
capped (`max_file_size`), images decoded by transferkit's own hardened decoder (never
by Gradio), so a bad file gives a one-line reason in the page and the app keeps
serving; requests queue with bounded concurrency and queue length.

Heat maps need the Keras model. For an export, the demo looks for the run it came from
(`RUN/export/saved_model` → `RUN`) or the export's `model.keras`; if there is none, it
serves predictions only and says so in the page.

Modules: `session` (what is served), `handlers` (the events), `model_tab`, `inside_tab`,
`feedback`, `access` (logins and job limits), `app`.
"""

from transferkit.demo.app import build_demo, launch

__all__ = ["build_demo", "launch"]
