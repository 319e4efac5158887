"""A progress line on standard error for commands that can take minutes (CLI only).

:func:`elapsed` shows ``label: 12 s`` on stderr, updated each second after the first two,
only when stderr is a terminal (never in logs or pipes), and erases it when the work ends.
The solvers have no common iteration callback, so the line shows the elapsed time, not a
fraction done; ``qmarginal generate`` and ``train`` have their own tqdm bars.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

__all__: list[str] = []


@contextlib.contextmanager
def elapsed(label: str, enabled: bool = True, stream=None, delay: float = 2.0):
    """Show the elapsed time of the enclosed work on ``stream`` (stderr) when it is a terminal."""
    stream = stream or sys.stderr
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        yield
        return
    stop = threading.Event()
    t0 = time.monotonic()
    shown = [False]

    def run():
        if stop.wait(delay):
            return
        while True:
            stream.write(f"\r{label}: {time.monotonic() - t0:.0f} s ")
            stream.flush()
            shown[0] = True
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if shown[0]:
            stream.write("\r" + " " * (len(label) + 12) + "\r")
            stream.flush()
