"""A `transferkit` command line that kills itself mid-training, for resume tests."""

# `transferkit train ...` that kills itself (SIGKILL, as `kill -9`) at the end of the first
# fine-tuning epoch, the moment BackupAndRestore has written that epoch's backup.
KILL_AFTER_FIRST_BACKUP = """
import os, signal, sys
import keras
backup = keras.callbacks.BackupAndRestore.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    backup(self, epoch, logs)
    os.kill(os.getpid(), signal.SIGKILL)
keras.callbacks.BackupAndRestore.on_epoch_end = on_epoch_end
from transferkit.cli import main
sys.exit(main(sys.argv[1:]))
"""
