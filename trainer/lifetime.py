"""No process outlives the one that started it.

A child asks to be signalled when its parent dies: Linux delivers the signal itself
(``prctl(PR_SET_PDEATHSIG)``, even when the parent was SIGKILLed or ran out of memory); where
that call is missing, a thread polls the parent's pid instead. A worker asks for SIGTERM, its
graceful stop (its trials go back in the queue); a searcher of ``regtune tune``, whose run
cannot be resumed without its parent, for SIGKILL.

A process asked to stop hears it whatever it is doing: the signal is relayed to a thread of its
own (``stop_on_signals``) instead of taking a lock in the middle of the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_S = 0.5


def _kernel_watch(sig: int) -> bool:
    """Ask Linux for ``sig`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def on_parent_death(parent: int, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to this process when ``parent`` (the pid that started it) is gone."""
    if not _kernel_watch(sig):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(POLL_S)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, name="regtune-parent-watch", daemon=True).start()
    # The parent may have died before the request: then nobody will signal.
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def stop_on_signals(
    stopping: threading.Event,
    announce: Callable[[int], None],
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """On each of ``signals``: ``announce(signum)``, then set ``stopping``. Main thread only.

    Not in the Python signal handler itself: it runs in the main thread between two of its
    bytecodes, maybe inside ``stopping.wait()`` at the instant that holds the event's
    (non-reentrant) lock, and ``stopping.set()`` there waits for that lock for ever (a worker
    did, after logging that it was stopping). The handler only writes the signal's number to a
    pipe, which takes no lock; a thread reads it and does the rest.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # a full pipe drops a repeated signal instead of blocking

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(write_fd, bytes([signum]))

    for sig in signals:
        signal.signal(sig, handler)

    def relay() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                announce(signum)
                stopping.set()

    threading.Thread(target=relay, name="regtune-signals", daemon=True).start()
