"""The unit layer's stub broker (`irq/testing.py`) answers as the real one does on a real Redis: the same
scenario, played on both, reads the same, so that what the unit tests of the lifecycle conclude from the
stub holds for the broker the lifecycle runs with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from irq.broker import Broker
from irq.endpoints import queue_name
from irq.settings import Settings
from irq.testing import BACKEND, MODEL, StubBroker

QUEUE = queue_name(MODEL, BACKEND)
IDS = [f"0190a000-0000-7000-8000-00000000000{i}" for i in range(4)]


@pytest.fixture
def real(redis_url: str) -> Iterator[Broker]:
    settings = Settings(
        redis_url=redis_url, endpoints_file=None, default_model=MODEL, structured_output_backend=BACKEND
    )
    broker = Broker(settings)
    yield broker
    broker.close()


def forget(broker: Broker) -> None:
    """Lose every message: Redis restarted without persistence."""
    if isinstance(broker, StubBroker):
        broker.forget()
    else:
        broker.redis.flushdb()


def scenario(broker: Broker) -> list[Any]:
    """What the lifecycle and the sweeper read of a broker while jobs are sent and lost."""
    seen: list[Any] = [broker.queue_depths(), broker.message_count(0), broker.without_message(set(IDS), 0)]
    broker.enqueue(IDS[0], QUEUE, 5)
    broker.enqueue(IDS[1], QUEUE, 9, countdown=1.5)
    broker.enqueue(IDS[1], QUEUE, 9)  # a job sent twice holds two messages
    seen += [broker.queue_depths(), broker.message_count(0), broker.without_message(set(IDS), 0)]
    forget(broker)
    seen += [broker.queue_depths(), broker.message_count(0), broker.without_message(set(IDS[:2]), 0)]
    return seen


def test_the_stub_broker_reads_as_the_real_one_on_redis(real: Broker) -> None:
    assert real.queues == [QUEUE]
    assert scenario(StubBroker()) == scenario(real)
