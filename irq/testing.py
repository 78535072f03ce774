"""Test doubles for the unit layer (`tests/unit/`): a stub broker and a notifier that keep in memory what the
lifecycle (`irq/jobs.py`) sends, and an in-memory store; nothing here opens a socket or starts a process.

The store is not a second implementation: `MemoryDatabase` is SQLite held in memory and driven by the very
statements of `irq/store/`, so the unit layer tests one set of statements, the one that runs in production.
Its tables come from the models (`Base.metadata.create_all`), not from the migrations: the system layer
applies those to SQLite and PostgreSQL and checks them against the models (`tests/test_store.py`).

The models are dramatiq's `StubBroker` (messages kept in lists a test reads and takes from) and
procrastinate's `InMemoryConnector` (the same interface as the real thing, plus what a test needs to look
in and to make it fail).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery

from irq.broker import Broker
from irq.clock import utcnow
from irq.endpoints import Endpoint, Registry
from irq.events import Notifier
from irq.settings import Settings
from irq.store.db import Database
from irq.store.keys import find_key, insert_key
from irq.store.models import Base

MODEL = "SmolLM2-135M-Instruct"  # the model of the stub broker's default registry (and `Settings`')
BACKEND = "guidance"


def one_endpoint(model: str = MODEL, backend: str = BACKEND, name: str = "default") -> Endpoint:
    """An endpoint that no test ever calls (its URL cannot resolve)."""
    return Endpoint(name=name, url=f"http://{name}.invalid/generate", model=model, backend=backend)


@dataclass(frozen=True)
class Message:
    """One job's message as the lifecycle sent it: its queue, its priority (0..9, 9 most urgent, the job's
    own scale before a transport maps it) and its delay (None: at once)."""

    job_id: str
    queue: str
    priority: int
    countdown: float | None = None


@dataclass(frozen=True)
class Delivery:
    """A message handed to a worker, and when (Unix seconds)."""

    message: Message
    at: float


class StubBroker(Broker):
    """The broker's interface over lists in memory: `sent` is every message ever enqueued, `waiting` those
    not yet delivered, `delivered` those a worker holds. `go_down` makes enqueues fail (after `after` more
    succeed) as a Redis that stopped answering does; `forget` loses every message, as a Redis restarted
    without persistence does. It sends a job only to a queue its registry declares."""

    def __init__(self, registry: Registry | None = None, settings: Settings | None = None) -> None:
        # Not `Broker.__init__`: that makes a Redis client. Nothing here reaches Redis.
        self.settings = settings or Settings()
        self.registry = registry or Registry(endpoints=[one_endpoint()])
        self.queues = self.registry.queues
        self.amqp = False
        self.sent: list[Message] = []
        self.waiting: list[Message] = []
        self.delivered: list[Delivery] = []
        self.states: dict[str, dict[str, object]] = {}
        self.locks: dict[str, tuple[str, float]] = {}  # key → (holder, when it lapses: monotonic s)
        self.closed = False
        self._down: Exception | None = None
        self._accepted_before_down = 0

    @property
    def app(self) -> Celery:
        raise RuntimeError("the stub broker has no Celery app: a unit test sends no task")

    # --- what a test does to the broker -----------------------------------------------------------

    def go_down(self, after: int = 0, error: Exception | None = None) -> None:
        """Accept `after` more messages, then refuse every one with `error` until `come_back`."""
        self._accepted_before_down = after
        self._down = error or ConnectionError("the broker does not answer")

    def come_back(self) -> None:
        self._down = None

    def forget(self) -> None:
        """Lose every message, waiting or delivered."""
        self.waiting.clear()
        self.delivered.clear()

    def deliver(self, queue: str | None = None, at: float | None = None) -> Message | None:
        """Hand the most urgent waiting message (of `queue`, or of any) to a worker, at `at` (now by
        default); None when there is none."""
        candidates = [m for m in self.waiting if queue is None or m.queue == queue]
        if not candidates:
            return None
        message = max(candidates, key=lambda m: m.priority)  # max keeps the first sent among equals
        self.waiting.remove(message)
        self.delivered.append(Delivery(message, time.time() if at is None else at))
        return message

    def messages_for(self, job_id: str) -> list[Message]:
        """Every message sent for one job, oldest first."""
        return [m for m in self.sent if m.job_id == job_id]

    # --- the broker's interface -------------------------------------------------------------------

    def enqueue(self, job_id: str, queue: str, priority: int, countdown: float | None = None) -> None:
        if self._down is not None:
            if self._accepted_before_down <= 0:
                raise self._down
            self._accepted_before_down -= 1
        if queue not in self.queues:
            raise LookupError(f"no queue {queue!r} is declared (the registry's: {', '.join(self.queues)})")
        message = Message(job_id, queue, priority, countdown)
        self.sent.append(message)
        self.waiting.append(message)

    def queue_depths(self) -> dict[str, int]:
        return {q: sum(1 for m in self.waiting if m.queue == q) for q in self.queues}

    def publish_endpoint_state(self, name: str, state: dict[str, object]) -> None:
        self.states[name] = dict(state)

    def endpoint_states(self) -> dict[str, dict[str, object]]:
        return {name: dict(state) for name, state in self.states.items()}

    def without_message(self, job_ids: set[str], delivered_after: float) -> set[str]:
        return job_ids - self._held(delivered_after)

    def message_count(self, delivered_after: float) -> int:
        return len(self.waiting) + sum(1 for d in self.delivered if d.at >= delivered_after)

    def take_lock(self, key: str, holder: str, ttl_ms: int) -> bool:
        now = time.monotonic()
        held = self.locks.get(key)
        if held is not None and held[1] > now:
            return False
        self.locks[key] = (holder, now + ttl_ms / 1000)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        if self.locks.get(key, ("", 0.0))[0] == holder:
            del self.locks[key]

    def close(self) -> None:
        self.closed = True

    def _held(self, delivered_after: float) -> set[str]:
        """The jobs with a message waiting, or delivered at or after `delivered_after`."""
        recent = (d.message for d in self.delivered if d.at >= delivered_after)
        return {m.job_id for m in itertools.chain(self.waiting, recent)}


class StubNotifier(Notifier):
    """Keeps the "finished" notices in `notices` (job ids, in the order sent) instead of publishing them."""

    def __init__(self) -> None:  # no Redis client
        self.notices: list[str] = []

    def finished(self, job_ids: Sequence[str]) -> None:
        self.notices.extend(job_ids)


class MemoryDatabase(Database):
    """A store in memory: SQLite's `memdb` file system under a name of its own, which every pooled
    connection of the engine opens (each with its own locks, as connections to a file have); it lives
    until `dispose`."""

    _names = itertools.count()

    def __init__(self) -> None:
        name = f"file:/irq-memory-{time.time_ns()}-{next(self._names)}?vfs=memdb"
        # SQLite drops a memdb database with its last connection: this one holds it open.
        self._keep = sqlite3.connect(name, uri=True)
        super().__init__(f"sqlite:///{name}&uri=true")
        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        super().dispose()
        self._keep.close()


def add_owner(db: Database, name: str = "alice", admin: bool = False) -> int:
    """An API key's id, for the jobs of a test to belong to (the key itself is never needed)."""
    key_hash = f"{name}-{time.time_ns()}"
    insert_key(db, name=name, prefix=name[:10], key_hash=key_hash, admin=admin, now=utcnow())
    row = find_key(db, key_hash)
    if row is None:
        raise LookupError(f"the key {name!r} just stored cannot be read back")
    return row.id
