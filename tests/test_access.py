"""Access control over real HTTP: rate limit and in-flight quota per key, admin-only cross-tenant stats,
Flower behind auth, and secrets kept out of logs, errors and job records."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from irq.keys import create_key
from tests import ROOT
from tests.procs import Service, free_port, wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

PROMPT = "Create a function that returns the maximum of a list"


@pytest.fixture
def limited(
    request: pytest.FixtureRequest, sqlite_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Stack]:
    """The API with the limits a test gives as `parametrize("limited", [env], indirect=True)`."""
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env=request.param)
    yield stack
    stop_stack(stack)


@pytest.mark.parametrize("limited", [{"IRQ_RATE_LIMIT_PER_S": "5"}], indirect=True)
def test_a_key_over_its_request_rate_gets_429_with_retry_after(limited: Stack) -> None:
    with limited.client() as alice, limited.client(limited.other_key) as bob:
        answers = [alice.get("/v1/jobs") for _ in range(30)]
        limited_answers = [r for r in answers if r.status_code == 429]
        assert limited_answers, [r.status_code for r in answers]
        assert {r.status_code for r in answers} == {200, 429}
        assert limited_answers[0].headers["Retry-After"] == "1"
        assert limited_answers[0].json()["error"]["code"] == "rate_limited"
        assert bob.get("/v1/jobs").status_code == 200  # one key's limit is not another's
        wait_until(lambda: alice.get("/v1/jobs").status_code == 200, 5, "the next second's allowance")


@pytest.mark.parametrize("limited", [{"IRQ_MAX_INFLIGHT_JOBS": "3"}], indirect=True)
def test_a_key_at_its_in_flight_quota_gets_429_until_a_job_ends(limited: Stack) -> None:
    with limited.client() as alice, limited.client(limited.other_key) as bob:
        ids = [alice.post("/v1/jobs", json={"prompt": f"{PROMPT} {i}"}).json()["id"] for i in range(3)]
        over = alice.post("/v1/jobs", json={"prompt": PROMPT})
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert over.headers["Retry-After"]
        assert limited.queue_length() == 3  # the refused job was neither queued
        assert len(alice.get("/v1/jobs").json()["jobs"]) == 3  # nor stored
        assert bob.post("/v1/jobs", json={"prompt": PROMPT}).status_code == 202
        alice.post(f"/v1/jobs/{ids[0]}/cancel")
        assert alice.post("/v1/jobs", json={"prompt": PROMPT}).status_code == 202


def test_only_an_admin_key_sees_every_keys_stats(api_only: Stack) -> None:
    admin = create_key(api_only.db, "ops", admin=True)
    with (
        api_only.client() as alice,
        api_only.client(api_only.other_key) as bob,
        api_only.client(admin) as ops,
    ):
        for _ in range(2):
            alice.post("/v1/jobs", json={"prompt": PROMPT})
        bob.post("/v1/jobs", json={"prompt": PROMPT})
        own = alice.get("/v1/stats").json()
        assert own["jobs"] == {"queued": 2}
        assert [o["name"] for o in own["owners"]] == ["alice"]
        refused = alice.get("/v1/stats", params={"scope": "all"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        everyone = ops.get("/v1/stats", params={"scope": "all"}).json()
        assert everyone["jobs"] == {"queued": 3}
        assert {o["name"]: o["jobs"] for o in everyone["owners"]} == {
            "alice": {"queued": 2},
            "bob": {"queued": 1},
        }


def test_flower_answers_only_with_its_credentials(redis_url: str, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "cli", "flower"],
        env={"PATH": "/usr/bin:/bin", "IRQ_REDIS_URL": redis_url, "IRQ_FLOWER_BASIC_AUTH": ""},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "IRQ_FLOWER_BASIC_AUTH" in refused.stderr

    port = free_port()
    env = {"IRQ_REDIS_URL": redis_url, "IRQ_FLOWER_PORT": str(port), "IRQ_FLOWER_BASIC_AUTH": "ops:fl0wer-pw"}
    flower = Service("flower", ["flower"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(base + "/", timeout=2).status_code > 0
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "Flower")
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/api/workers", auth=("ops", "wrong")).status_code == 401
        assert httpx.get(base + "/", auth=("ops", "fl0wer-pw")).status_code == 200
    finally:
        flower.stop()


def test_secrets_stay_out_of_logs_errors_and_job_records(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    db_password = "db-pw-5f2c1e"
    modal_key, modal_secret = "wk-91ab77c3", "ws-0d4e6f28"
    database_url = postgres_url.replace("://", f"://{getpass.getuser()}:{db_password}@", 1)
    inference: FaultService = start_fault_service(tmp_path)
    headers = json.dumps({"Modal-Key": modal_key, "Modal-Secret": modal_secret})
    stack = start_stack(
        database_url,
        redis_url,
        inference.url,
        tmp_path,
        env={"IRQ_INFERENCE_HEADERS": headers, "IRQ_RETRY_BACKOFF_S": "0.1"},
    )
    wrong_key = "irq_wrong-key-7c1d0b"
    try:
        with stack.client() as http:
            ids = [
                http.post("/v1/jobs", json={"prompt": prompt}).json()["id"]
                for prompt in (PROMPT, "[faults: 400] refused", "[faults: 500, 500, 500] broken")
            ]
            jobs = [stack.wait_for(http, job_id, 60) for job_id in ids]
            listing = http.get("/v1/jobs").text
        with stack.client(wrong_key) as http:
            unauthorized = http.get("/v1/jobs").text
        assert [job["status"] for job in jobs] == ["succeeded", "failed", "failed"]
    finally:
        stop_stack(stack)
        inference.service.stop()
    seen = {
        "job records": json.dumps(jobs) + listing,
        "error answers": unauthorized,
        **{svc.name: Path(str(svc.log_path)).read_text(errors="replace") for svc in stack.services},
    }
    for secret in (stack.key, stack.other_key, wrong_key, db_password, modal_key, modal_secret):
        for where, text in seen.items():
            assert secret not in text, f"a secret appears in the {where}"


def test_a_revoked_key_is_refused_at_once_by_every_api_process(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Two API processes have the key cached (10 s); `irq keys revoke` ends it in both at once."""
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env={"IRQ_API_WORKERS": "2"})
    try:
        key = create_key(stack.db, "contractor")
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(8):  # spread over both processes, so that each has it cached
            assert httpx.get(stack.api + "/v1/jobs", headers=headers).status_code == 200
        env = {**os.environ, **stack.env}
        listed = subprocess.run([sys.executable, "-m", "cli", "keys", "list"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert "contractor" in listed.stdout and key not in listed.stdout and "active" in listed.stdout
        revoked = subprocess.run([sys.executable, "-m", "cli", "keys", "revoke", "contractor"], env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        wait_until(lambda: httpx.get(stack.api + "/v1/jobs", headers=headers).status_code == 401, 1, "401")
        answers = {httpx.get(stack.api + "/v1/jobs", headers=headers).status_code for _ in range(8)}
        assert answers == {401}
        with stack.client() as http:  # the others' keys still work
            assert http.get("/v1/jobs").status_code == 200
    finally:
        stop_stack(stack)


def test_only_an_admin_key_sees_which_worker_ran_its_job(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path)
    try:
        admin_key = create_key(stack.db, "operator", admin=True)
        seen = {}
        for name, key in (("tenant", stack.key), ("admin", admin_key)):
            with stack.client(key) as http:
                job_id = http.post("/v1/jobs", json={"prompt": f"{name}: a function summing a list"}).json()[
                    "id"
                ]
                seen[name] = stack.wait_for(http, job_id, 60)
                listed = http.get("/v1/jobs").json()["jobs"]
                assert [j["worker"] for j in listed] == [seen[name]["worker"]]
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert seen["tenant"]["worker"] is None and seen["tenant"]["endpoint"] == "default"
    assert seen["admin"]["worker"].startswith("test-worker#")  # its host's worker name and pid
