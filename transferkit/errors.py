"""Errors a user can act on.

Every error transferkit raises on purpose derives from `TransferkitError`, so the CLI
can print it as one readable line (and exit non-zero) instead of a traceback.
"""


class TransferkitError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class DataError(TransferkitError):
    """The data folder (or an image in it) cannot be used as given."""


class ImageError(DataError):
    """One image cannot be decoded; `reason` is a short, user-facing explanation."""

    def __init__(self, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class ConfigError(TransferkitError):
    """An option is out of range or inconsistent with another."""


class WeightsError(TransferkitError):
    """Pretrained weights could not be found or loaded."""


class RunError(TransferkitError):
    """A run directory is missing, incomplete, unsafe or would be overwritten."""
