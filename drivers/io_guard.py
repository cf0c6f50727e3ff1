"""Critical sections around device exchanges (QCoDeS-style Ctrl-C handling).

A signal handler that would interrupt the program (Ctrl-C, SIGTERM) first calls :func:`defer`:
inside :func:`atomic_io` on the main thread the interrupt is held back until the command/reply
exchange completes, so no command is cut in half; a second signal is not deferred.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
_pending: BaseException | None = None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def atomic_io() -> Iterator[None]:
    """Run one device exchange; a deferred interrupt is raised when the outermost section ends."""
    global _depth, _pending
    if not _on_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            exc, _pending = _pending, None
            raise exc


def in_progress() -> bool:
    """Whether the main thread is inside :func:`atomic_io` (an interrupt now would be deferred)."""
    return _on_main_thread() and _depth > 0


def defer(exc: BaseException) -> bool:
    """Hold ``exc`` back if an exchange is in progress and nothing is pending yet; True if deferred."""
    global _pending
    if _depth > 0 and _pending is None:
        _pending = exc
        return True
    return False
