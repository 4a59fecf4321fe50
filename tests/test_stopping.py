"""edge/stopping.py: the stop flag the camera loop checks, and the SIGINT/SIGTERM handlers that set it.

    .venv/bin/pytest tests/test_stopping.py -q

The handlers are installed in this process, raised with `signal.raise_signal`
and checked to be put back afterwards; the script's own stop-signal tests
(a real signal to a subprocess) are in tests/test_camera.py.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from camera_support import SUBPROCESS_TIMEOUT, _signal_handlers

from edge import stopping


def test_stop_signals_set_the_flag_and_put_the_old_handlers_back():
    before = _signal_handlers()
    with stopping.StopSignals() as stop:
        assert all(signal.getsignal(number) != before[number] for number in stopping.STOP_SIGNALS)
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(SUBPROCESS_TIMEOUT), "the SIGTERM handler did not set the flag"
        assert (stop.signal_name, stop.exit_code) == ("SIGTERM", 143)
        # A second signal is for a user who will not wait: it interrupts, still naming the signal.
        with pytest.raises(stopping.ForcedStop) as forced:
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # The Python-level handler runs between bytecodes, at once in practice.
                time.sleep(0.01)
        assert forced.value.signal_name == "SIGINT" and isinstance(forced.value, KeyboardInterrupt)
    assert _signal_handlers() == before


def test_stop_signals_handle_sigint_ignored_at_start():
    # The state a background job of a non-interactive shell starts in: Python itself would never see Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopping.StopSignals() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.wait(SUBPROCESS_TIMEOUT)
            assert (stop.signal_name, stop.exit_code) == ("SIGINT", 130)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stop_signals_outside_the_main_thread_install_nothing():
    before = _signal_handlers()
    seen: dict[int, object] = {}

    def enter_and_leave():
        with stopping.StopSignals():
            seen.update(_signal_handlers())

    thread = threading.Thread(target=enter_and_leave)
    thread.start()
    thread.join(SUBPROCESS_TIMEOUT)
    assert seen == before == _signal_handlers()
