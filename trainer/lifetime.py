"""No process outlives the one that started it.

A child asks to be signalled when its parent dies: Linux delivers the signal itself
(``prctl(PR_SET_PDEATHSIG)``, even when the parent was SIGKILLed or ran out of memory); where
that call is missing, a thread polls the parent's pid instead. A worker asks for SIGTERM, its
graceful stop (its trials go back in the queue); a searcher of ``regtune tune``, whose run
cannot be resumed without its parent, for SIGKILL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

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
