"""Budgets (`90s`, `20m`, `1h30m`, `1.5h`: units h, m, s, largest first) and presets,
parsed strictly. A bare number is refused: `--time-limit 20` could mean seconds or minutes,
and a wrong guess costs the user an hour or a useless run."""

from __future__ import annotations

import re

from transferkit.errors import ConfigError

# The documented presets (docs/training.md, "Time budgets"). "fast": the default recipe,
# nothing measured; the others fit it into their budget (larger data, slower machines).
PRESETS: dict[str, float | None] = {"fast": None, "balanced": 20 * 60.0, "best": 60 * 60.0}
_NUMBER = r"(\d+(?:\.\d+)?)"
_BUDGET = re.compile(f"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")  # in this order


def parse_budget(text: str | float | int, option: str = "--time-limit") -> float:
    """Seconds from `"20m"`, `"90s"`, `"1h"`, `"1h30m"` (or a number of seconds, API only).

    Args:
        text: The budget. Numbers (int / float) are taken as seconds: the API's unit.
        option: The option's name, for the error message.

    Returns:
        The budget in seconds, > 0.

    Raises:
        ConfigError: Anything else; the message names the option and the accepted forms.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{option} must be a duration such as 90s, 20m, 1h or 1h30m")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = _BUDGET.fullmatch(str(text).strip().lower())
        if not parts or not any(parts.groups()):
            raise ConfigError(f"{option} {text!r} is not a duration: use e.g. 90s, 20m, 1h "
                              "or 1h30m (a number and a unit h, m or s)")
        seconds = sum(float(n or 0) * unit for n, unit in zip(parts.groups(),
                                                               (3600, 60, 1)))
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{option} must be more than 0 seconds, got {text!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    """`1h05m`, `20m`, `4m30s`, `45s`: how budgets are shown back to the user."""
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def resolve_budget(time_limit: str | float | None, preset: str | None) -> float | None:
    """The run's budget in seconds (None: none); `--time-limit` wins over `--preset`'s:
    the preset is a named default, the limit what this user asked for now.

    Raises:
        ConfigError: An unknown preset or a malformed limit.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if time_limit is not None:
        return parse_budget(time_limit)
    return PRESETS[preset] if preset is not None else None
