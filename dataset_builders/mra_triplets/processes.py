"""Worker processes of a triplet build end with the process that started them.

`download_and_prepare(num_proc=N)` forks a pool of workers (and `datasets`' queue manager). If the building process is
killed outright (SIGKILL, the out-of-memory killer), nothing runs in it to stop them: re-parented, they would go on
sending agent requests and writing to the caches while the user starts the build again. Inside
[`workers_end_with_this_process`], every process forked from the building process therefore

- asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`, Linux),
- runs a watchdog thread that kills it within `WATCHDOG_INTERVAL` seconds of its parent's end (its parent process id
  changes when it is re-parented): the same guarantee where `prctl` is missing, and for a parent thread that
  forked and ended, and
- ignores SIGINT: Ctrl-C reaches the whole process group, and the building process alone handles it (it stops the
  pool on its way out), so the user sees one message instead of a traceback per worker.

Example:
    ```python
    >>> with workers_end_with_this_process():
    ...     builder.download_and_prepare(num_proc=4)
    ```
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL = 0.5

_active = 0  # >0 while a build runs in this process
_parent_at_fork: int | None = None


def _load_prctl():
    """libc's `prctl`, looked up once in the parent (a `dlopen` in a child forked from a threaded process can hang)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _before_fork() -> None:
    global _parent_at_fork
    _parent_at_fork = os.getpid()


def _after_fork_in_child() -> None:
    if _active and _parent_at_fork is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        end_with_parent(_parent_at_fork)


def end_with_parent(parent: int) -> None:
    """Make this process end (SIGKILL) when process `parent`, its parent, ends; at once when it already has."""
    if _prctl is not None:  # else the watchdog alone
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended between the fork and the prctl
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(WATCHDOG_INTERVAL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="mra-cir-parent-watchdog", daemon=True).start()


@contextlib.contextmanager
def workers_end_with_this_process() -> Iterator[None]:
    """Within this block, every process forked from this one ends when this one does (see the module docstring)."""
    global _active
    _active += 1
    try:
        yield
    finally:
        _active -= 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


__all__ = ["end_with_parent", "workers_end_with_this_process"]
