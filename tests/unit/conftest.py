"""Fixtures of the unit layer: an in-memory store, a stub broker and notifier, and the real lifecycle over
them (`irq/testing.py`); and a guard that fails any unit test which starts a process or opens a socket,
so that `pytest tests/unit` stays a layer of seconds with nothing to start."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from irq.jobs import JobManager
from irq.retry import RetryPolicy
from irq.store.jobs import JobStore
from irq.testing import MemoryDatabase, StubBroker, StubNotifier, add_owner
from tests.unit.support import ProcessStarted

BACKOFF_S, BACKOFF_MAX_S = 2.0, 60.0  # `Settings`' defaults


@pytest.fixture(autouse=True)
def no_process_no_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse (and record, failing the test at teardown) every subprocess, fork and socket connection."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: object, **kwargs: object) -> None:
            attempts.append(what)
            raise ProcessStarted(f"a unit test may not {what}: it belongs in the system layer")

        return refused

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("start a subprocess"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        monkeypatch.setattr(os, name, refuse(f"call os.{name}"))
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse(f"{name} a socket"))
    yield attempts
    assert attempts == [], f"the test tried to {', '.join(attempts)}"


@pytest.fixture
def db() -> Iterator[MemoryDatabase]:
    database = MemoryDatabase()
    yield database
    database.dispose()


@pytest.fixture
def owner(db: MemoryDatabase) -> int:
    return add_owner(db, "alice")


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker()


@pytest.fixture
def notices() -> StubNotifier:
    return StubNotifier()


@pytest.fixture
def retry() -> RetryPolicy:
    return RetryPolicy(backoff_s=BACKOFF_S, backoff_max_s=BACKOFF_MAX_S)


@pytest.fixture
def jobs(db: MemoryDatabase, broker: StubBroker, notices: StubNotifier, retry: RetryPolicy) -> JobManager:
    """The real lifecycle, over the in-memory store and the stub broker."""
    return JobManager(JobStore(db), broker, notices, retry, broker.registry)
