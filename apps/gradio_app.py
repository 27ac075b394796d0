"""The transferkit web demo as a script: `python apps/gradio_app.py RUN_DIR [--port 7860]`.

The same command as `transferkit serve` (options, help and errors included); the app is
in `transferkit.demo`, whose docstring describes the page and its API.
"""

import sys

import transferkit.cli

if __name__ == "__main__":
    sys.exit(transferkit.cli.main(["serve", *sys.argv[1:]]))
