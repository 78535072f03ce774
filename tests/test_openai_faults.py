"""The OpenAI-compatible surface under faults, over real processes: an API killed (`kill -9`) at several
points of a large batch create leaves either the batch, listed and running once, or nothing that runs or
counts against the key's quota, and the create retried finds the same batch; an upload that cannot be
recorded keeps no bytes, and the bytes a crash left are swept."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch
from sqlalchemy import text

from cli.stack import prepare_store, settings_for
from irq import retention
from irq.clock import utcnow
from irq.files import FileStorage, new_file_id
from irq.store.files import FileRecords
from tests.procs import PostgresServer, wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(600)

N = 1000  # lines of each batch file
CREATE = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}  # a create's other fields


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api + "/openai/v1", api_key=stack.key, max_retries=0)


def create(
    client: openai.OpenAI, file_id: str, key: str | None = None, metadata: dict[str, str] | None = None
) -> Batch:
    """`client.batches.create` of the file, under `key` if given."""
    headers = {"Idempotency-Key": key} if key is not None else None
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_headers=headers,
        metadata=metadata,
    )


def prompts(tag: str, n: int = N) -> list[str]:
    return [f"{tag} line {i}: a function that returns {i}" for i in range(n)]


def upload(stack: Stack, tag: str, n: int = N) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": f"{tag}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "SmolLM2-135M-Instruct",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": prompt}],
                },
            }
        )  # fmt: skip
        for i, prompt in enumerate(prompts(tag, n))
    ]
    data = ("\n".join(lines) + "\n").encode()
    return sdk(stack).files.create(file=(f"{tag}.jsonl", data), purpose="batch").id


def stored_jobs(stack: Stack, tag: str) -> tuple[int, int]:
    """(jobs of this file, of them already sent to the broker)."""
    with stack.db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT count(*), count(enqueued_at) FROM jobs WHERE prompt LIKE :p"), {"p": f"{tag} line %"}
        ).one()
    return int(row[0]), int(row[1])


def listed(stack: Stack, file_id: str) -> list[Any]:
    return [b for b in sdk(stack).batches.list(limit=100).data if b.input_file_id == file_id]


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, FaultService]]:
    """API and worker on PostgreSQL over the simulated engine; the key may have one file's jobs in flight,
    and the sweeper sends what a killed API left unsent within seconds."""
    service = start_fault_service(tmp_path)
    env = {"IRQ_RATE_LIMIT_PER_S": "0", "IRQ_MAX_INFLIGHT_JOBS": str(N), "IRQ_SWEEP_INTERVAL_S": "1",
           "IRQ_SWEEP_STALE_S": "2"}  # fmt: skip
    stack = start_stack(postgres_url, redis_url, service.url, tmp_path, env=env)
    yield stack, service
    stop_stack(stack)
    service.service.stop()


# When each create's API is killed: half a second into the request (reading and checking its lines), as
# soon as the first of its jobs is visible in the store, and once a third of them has been sent.
KILL_POINTS: dict[str, Callable[[Stack, str, float], bool]] = {
    "validating": lambda stack, tag, since: time.monotonic() - since > 0.5,
    "first-row": lambda stack, tag, since: stored_jobs(stack, tag)[0] > 0,
    "third-sent": lambda stack, tag, since: stored_jobs(stack, tag)[1] >= N // 3,
}


def kill_during_create(stack: Stack, file_id: str, reached: Callable[[], bool]) -> object:
    """Create a batch from `file_id` and `kill -9` the API once `reached()`; start it again. The answer
    the client got: a response, or the transport error of its lost connection."""
    answers: list[object] = []

    def create() -> None:
        with stack.client() as http:
            try:
                body = {"input_file_id": file_id, **CREATE}
                answers.append(http.post("/openai/v1/batches", json=body, timeout=300))
            except httpx.TransportError as exc:
                answers.append(exc)

    creating = threading.Thread(target=create)
    creating.start()
    wait_until(reached, 120, "the create to reach its kill point", interval_s=0.005)
    stack.services[0].kill()  # the API (the worker was started after it)
    creating.join(60)
    stack.start_api()
    stack.services.insert(0, stack.services.pop())  # the next kill takes the new API
    return answers[0]


def test_an_api_killed_during_a_large_batch_create_leaves_the_batch_or_nothing(
    deployment: tuple[Stack, FaultService],
) -> None:
    stack, service = deployment
    client = sdk(stack)
    seen: dict[str, str] = {}
    for point, reached in KILL_POINTS.items():
        tag = f"[{point}]"
        file_id = upload(stack, tag)
        since = time.monotonic()
        answer = kill_during_create(stack, file_id, lambda: reached(stack, tag, since))  # noqa: B023

        found = listed(stack, file_id)
        if found:  # the batch, whole: the sweeper sends what the dead API did not
            assert len(found) == 1 and found[0].request_counts.total == N
        else:  # nothing that runs or counts against the quota
            assert not isinstance(answer, httpx.Response) or answer.status_code != 200
            assert stored_jobs(stack, tag)[0] == 0 and not any(p in service.calls() for p in prompts(tag))
            with stack.db.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM batches")).scalar() == len(seen)
        seen[point] = "listed" if found else "nothing"

        # The client retries its create (the SDK does on a lost connection): the same batch, or a new one,
        # not refused for the quota (one file's jobs) that an orphaned first batch would have taken.
        batch_id = create(client, file_id).id
        assert [b.id for b in listed(stack, file_id)] == [batch_id]
        assert not found or batch_id == found[0].id
        final: Any = wait_until(
            lambda: (b := client.batches.retrieve(batch_id)).status == "completed" and b,  # noqa: B023
            300,
            f"the batch of {point} to complete",
            interval_s=0.5,
        )
        assert final.request_counts.completed == N
        calls = service.calls()
        assert all(calls.get(p) == 1 for p in prompts(tag)), "a request ran twice or never"
    print(f"\nkill -9 of the API during a create of {N} lines: {seen}")


def test_an_idempotency_key_finds_the_batch_and_names_one_request(
    deployment: tuple[Stack, FaultService],
) -> None:
    stack, _ = deployment
    first, second = upload(stack, "[key-a]", 5), upload(stack, "[key-b]", 5)
    client = sdk(stack)
    made, again = create(client, first, "nightly-1"), create(client, first, "nightly-1")
    assert again.id == made.id
    with pytest.raises(openai.BadRequestError) as reused:  # the key names the first request
        create(client, second, "nightly-1")
    assert reused.value.code == "idempotency_key_reused"
    other = create(client, first, "nightly-2")
    assert other.id != made.id  # a new key runs the file again
    assert stored_jobs(stack, "[key-a]")[0] == 2 * 5 and stored_jobs(stack, "[key-b]")[0] == 0
    # Without a key, the input file is the key: a create retried after a lost answer finds the batch.
    plain = create(client, second)
    assert create(client, second).id == plain.id
    with pytest.raises(openai.ConflictError) as other_metadata:  # not the same request: said so
        create(client, second, metadata={"run": "2"})
    assert other_metadata.value.code == "input_file_in_use"
    assert stored_jobs(stack, "[key-b]")[0] == 5


def _folder(stack: Stack) -> list[str]:
    return sorted(os.listdir(stack.settings.files_dir)) if stack.settings.files_dir.is_dir() else []


def test_an_upload_the_store_cannot_record_keeps_no_bytes(redis_url: str, tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    stack = start_stack(server.url, redis_url, None, tmp_path, env={"IRQ_STORE_WAIT_S": "1"})
    try:
        client = sdk(stack)
        kept = client.files.create(file=("kept.jsonl", b'{"a": 1}\n'), purpose="batch")
        assert _folder(stack) == [kept.id]
        server.stop()
        with pytest.raises(openai.APIStatusError) as refused:
            client.files.create(file=("lost.jsonl", b'{"b": 2}\n' * 1000), purpose="batch")
        assert refused.value.status_code == 503
        assert _folder(stack) == [kept.id]  # the unrecorded upload's bytes are gone
    finally:
        stop_stack(stack)
        server.destroy()


def test_the_sweeper_deletes_bytes_without_a_record_once_they_are_old(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for({"IRQ_DATABASE_URL": sqlite_url, "IRQ_FILES_DIR": str(tmp_path / "files")})
    db, _ = prepare_store(sqlite_url, "alice")
    storage = FileStorage(settings.files_dir)
    recorded, orphan, fresh = new_file_id(), new_file_id(), new_file_id()
    for file_id in (recorded, orphan, fresh):
        storage.save(file_id, io.BytesIO(b"{}\n"), 1 << 20)
    partial = settings.files_dir / f".{new_file_id()}.partial"
    partial.write_bytes(b"half a")
    (settings.files_dir / "notes.txt").write_text("not irq's")
    with db.engine.connect() as conn:
        owner = conn.execute(text("SELECT id FROM api_keys")).scalar()
    FileRecords(db).add_file(dict(id=recorded, owner_id=owner, filename="a.jsonl", purpose="batch", bytes=3,
                                  lines=1, created_at=utcnow()))  # fmt: skip
    old = time.time() - retention.LEFTOVER_S - 60
    for path in (settings.files_dir / recorded, settings.files_dir / orphan, partial,
                 settings.files_dir / "notes.txt"):  # fmt: skip
        os.utime(path, (old, old))

    retention.keep(db, settings)
    assert sorted(os.listdir(settings.files_dir)) == sorted([recorded, fresh, "notes.txt"])
    db.dispose()
