"""The unit layer's guard (`tests/unit/conftest.py`): a unit test that starts a process or opens a socket
fails, however the code under test catches errors."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess

import pytest

from tests.unit.support import ProcessStarted


def test_a_unit_test_can_start_no_process_and_open_no_socket(no_process_no_socket: list[str]) -> None:
    with pytest.raises(ProcessStarted):
        subprocess.run(["true"], check=False)
    with pytest.raises(ProcessStarted):
        multiprocessing.get_context("fork").Process(target=print).start()
    with pytest.raises(ProcessStarted):
        socket.create_connection(("127.0.0.1", 6379), timeout=1)
    with pytest.raises(ProcessStarted):
        try:
            subprocess.Popen(["redis-server"])
        except Exception:  # what the notifier and the worker's upkeep do with a failure: not this one
            pass
    assert no_process_no_socket == [
        "start a subprocess",
        "call os.fork",
        "connect a socket",
        "start a subprocess",
    ]
    no_process_no_socket.clear()  # this test's attempts were on purpose
