"""A process asked to stop hears it whatever its main thread is doing (``trainer.lifetime``).

Each scenario runs in a fresh interpreter: it installs signal handlers, and a regression would
hang for ever rather than fail, which the subprocess's timeout turns into a failure.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

RELAY = textwrap.dedent(
    """
    import os, signal, threading, time
    from trainer.lifetime import stop_on_signals

    stopping, heard = threading.Event(), []
    stop_on_signals(stopping, heard.append)
    {scenario}
    assert stopping.wait(10), "the stop was never relayed"
    time.sleep(0.2)  # a second signal (if any) is relayed too
    print(heard)
    """
)
# The main thread holds the event's own lock when the signal lands, as Event.wait() does at
# the instant it enters or leaves its wait: a handler that set the event would wait for ever.
WHILE_HOLDING_THE_LOCK = """
with stopping._cond:  # CPython's Event keeps its lock in a Condition
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)  # the Python-level handler has run by now, in this very thread
"""
WHILE_WAITING = """
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
while not stopping.wait(0.01):  # the worker's idle loop, at a hundred times its pace
    pass
os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.parametrize(
    ("scenario", "heard"),
    [(WHILE_HOLDING_THE_LOCK, "[15]"), (WHILE_WAITING, "[2, 15]")],
    ids=["main-thread-holds-the-events-lock", "main-thread-waits-on-the-event"],
)
def test_a_stop_signal_reaches_the_event(scenario: str, heard: str) -> None:
    script = RELAY.format(scenario=scenario)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == heard
