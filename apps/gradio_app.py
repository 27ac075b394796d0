"""The transferkit web demo as a script: `python apps/gradio_app.py RUN_DIR [--port 7860]`.

All the code is in `transferkit.demo`; see its docstring for the options and the API.
"""

import sys

from transferkit.demo import build_demo, main  # noqa: F401  (build_demo: for importers)

if __name__ == "__main__":
    sys.exit(main())
