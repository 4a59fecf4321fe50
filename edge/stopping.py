"""Stop the camera loop cleanly on SIGINT (Ctrl-C) or SIGTERM (`kill`, `systemctl stop`).

Used by `edge/camera.py`'s command line; not a script of its own.

Why the camera installs its own handlers rather than relying on Python's
KeyboardInterrupt: CPython installs its SIGINT handler only when SIGINT is not
ignored at start-up, and a background job of a non-interactive shell
(`bash -c 'python edge/camera.py ... &'`) starts with SIGINT ignored, so
Ctrl-C or `kill -INT` would be lost. SIGTERM has no Python handler at all, so
the process would die without releasing the camera or printing its summary.

The handler only records the request (`StopRequest`); the loop checks it at
least once per frame, and during an --fps-limit pause, and ends through its
normal clean-up. Setting a flag is
all a handler can safely do: an exception raised from a handler can land in
the middle of the clean-up itself. A second signal of either kind, for a user
who will not wait (e.g. the model is still loading), raises `ForcedStop`.

The exit status follows the shell's convention, 128 + the signal's number:
130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any

#: The signals that ask the camera to stop, in the order their handlers are installed.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How often `StopRequest.wait` looks at the flag, in seconds: the most a pause delays a stop.
WAIT_POLL_SECONDS = 0.05


def exit_code_for(signal_number: int) -> int:
    """The shell's exit status for a process stopped by `signal_number`: 128 + its number (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signal_number)


class ForcedStop(KeyboardInterrupt):
    """Raised by a second stop signal, when the first has not stopped the camera yet.

    A KeyboardInterrupt, so that code which already handles Ctrl-C handles it
    too and no `except Exception` swallows it.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = int(signal_number)
        self.signal_name = signal.Signals(signal_number).name


class StopRequest:
    """A stop flag set by a signal handler (or by anyone) and checked by the loop.

    `signal_name` says which signal asked ("SIGINT", "SIGTERM"); it is None
    until a stop is requested. Plain attributes, no lock: a handler runs in
    the main thread between two bytecodes, possibly while that thread holds a
    lock, so taking one there (as threading.Event.set does) could deadlock.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def request(self, signal_number: int) -> None:
        """Ask the loop to stop, naming the signal; the first request's signal is the one reported."""
        if self.signal_number is None:
            self.signal_name = signal.Signals(signal_number).name
            self.signal_number = int(signal_number)  # Set last: it is the flag that `requested` reads.

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, ending within WAIT_POLL_SECONDS of a stop request; True when one was made.

        Short sleeps rather than one long one: since Python 3.5 a sleep resumes
        after a signal's handler has run, so one long sleep would outlast the stop.
        """
        deadline = time.monotonic() + seconds
        while not self.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, WAIT_POLL_SECONDS))
        return True

    @property
    def exit_code(self) -> int | None:
        """130 or 143 once a stop was requested by SIGINT or SIGTERM, else None."""
        return exit_code_for(self.signal_number) if self.signal_number is not None else None


class StopSignals:
    """While in this context, SIGINT and SIGTERM set `self.stop` instead of killing or interrupting the process.

        with StopSignals() as stop:
            summary = camera.run(options, stop=stop)

    The previous handlers are put back on leaving, so a library or a test that
    uses it leaves nothing behind. Python allows signal handlers only in the
    main thread; elsewhere this installs nothing and `stop` is only set by hand.
    """

    def __init__(self, stop: StopRequest | None = None):
        self.stop = stop if stop is not None else StopRequest()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signal_number in STOP_SIGNALS:
                # Installed even where the signal was ignored at start: that is the case this module exists for.
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self.stop

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        previous, self._previous = self._previous, {}
        for signal_number, handler in previous.items():
            # None means the old handler was not installed from Python; the default is the nearest we can restore.
            signal.signal(signal_number, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.stop.requested:
            raise ForcedStop(signal_number)
        self.stop.request(signal_number)
