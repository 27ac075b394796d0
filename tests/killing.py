"""A `transferkit` command line that kills itself mid-training, for resume tests."""

# `transferkit train ...` that kills itself (SIGKILL, as `kill -9`) at the end of the first
# fine-tuning epoch, the moment the engine has written that epoch's backup.
KILL_AFTER_FIRST_BACKUP = """
import os, signal, sys
from pathlib import Path
from transferkit.engine import backup
save = backup.save
def killing_save(path, state, *arrays):
    save(path, state, *arrays)
    if Path(path).name.startswith("phase2") and state.epoch == 1 and not state.finished:
        os.kill(os.getpid(), signal.SIGKILL)
backup.save = killing_save
from transferkit.cli import main
sys.exit(main(sys.argv[1:]))
"""
