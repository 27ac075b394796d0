"""Who may use the served demo, and how much of it at once.

Logins are Gradio's own `auth` (a login page, then a session cookie; the API and the
uploaded files answer only to a logged-in session): `--auth USER:PASSWORD` (repeatable)
and/or `--auth-file FILE` of `USER:PASSWORD` lines (blank lines and `#` comments
ignored), so that passwords need not appear in the shell's history or in `ps`.

`JobLimit` bounds the heavy views of the Inside tab (dream, t-SNE map, depth probe, top
patches: seconds to minutes of CPU each). Gradio's `concurrency_limit` alone would
queue every further request (up to the queue's size) behind a job of minutes, each
visitor watching a queue position; the limit refuses at once instead, with a message
saying to try again, so the server's work stays bounded and the visitor knows why.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable

from transferkit.errors import ConfigError

HEAVY_JOBS = 1   # heavy Inside-tab views computed at once, across all visitors


def parse_login(text: str, where: str) -> tuple[str, str]:
    """`USER:PASSWORD` → `(user, password)` (the password may hold colons).

    Raises:
        ConfigError: No colon, or an empty user or password; the message names `where`.
    """
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise ConfigError(f"{where}: expected USER:PASSWORD (both non-empty), got "
                          f"{'a value without a colon' if not colon else 'an empty part'}")
    return user, password


def read_logins(path: str | Path) -> list[tuple[str, str]]:
    """The logins of an auth file: `USER:PASSWORD` a line, blank lines and `#` comments
    ignored.

    Raises:
        ConfigError: The file cannot be read, holds a bad line (named by number), or no
            login.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--auth-file {path}: cannot read it "
                          f"({getattr(e, 'strerror', None) or e})") from e
    logins = [parse_login(line.strip(), f"--auth-file {path}, line {number}")
              for number, line in enumerate(lines, start=1)
              if line.strip() and not line.lstrip().startswith("#")]
    if not logins:
        raise ConfigError(f"--auth-file {path} holds no USER:PASSWORD line")
    return logins


def exposure_warning(host: str, share: bool, auth) -> str | None:
    """One line when the demo is reachable from other machines without a login."""
    if auth:
        return None
    if share:
        return ("transferkit: warning: --share without --auth: anyone with the public "
                "gradio.live link can use this demo")
    if host not in ("127.0.0.1", "localhost", "::1"):
        return (f"transferkit: warning: serving on {host} without --auth: anyone who can "
                "reach this machine can use this demo (add --auth USER:PASSWORD)")
    return None


class JobLimit:
    """At most `n` calls of the guarded functions at once; others are refused at once.

    Args:
        n: Calls allowed at the same time.
        busy: The exception raised for a refused call (a `gradio.Error` in the demo).
    """

    def __init__(self, n: int, busy: Callable[[], Exception]):
        self._slots = threading.BoundedSemaphore(n)
        self._busy = busy

    def guard(self, fn: Callable) -> Callable:
        """`fn`, refused (`busy()` raised) while `n` guarded calls are running."""
        @functools.wraps(fn)
        def limited(*args, **kwargs):
            if not self._slots.acquire(blocking=False):
                raise self._busy()
            try:
                return fn(*args, **kwargs)
            finally:
                self._slots.release()
        return limited
