"""Several models and endpoints behind one API: the registry routes every job to an endpoint serving the
model and backend it asked for, an endpoint that is down holds back only its own jobs, and an endpoint that
answers with another model fails the job instead of passing its document off as the one asked for."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from irq.migrate import upgrade
from irq.store.db import Database
from tests.procs import free_port, wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack, write_registry

pytestmark = pytest.mark.timeout(300)

# Which model and backend each endpoint is registered with; `liar` reports another model than its entry.
ENTRIES = {
    "alpha": ("sim-alpha", "guidance"),
    "beta": ("sim-beta", "xgrammar"),
    "liar": ("sim-gamma", "guidance"),
}
REPORTED = {"alpha": "sim-alpha", "beta": "sim-beta", "liar": "sim-impostor"}


def registry_file(path: Path, services: dict[str, FaultService]) -> Path:
    entries = [
        dict(name=name, url=services[name].url, model=model, backend=backend, max_inflight=8)
        for name, (model, backend) in ENTRIES.items()
    ]
    return write_registry(path, *entries, default_model="sim-alpha")


def start_service(tmp_path: Path, name: str, port: int | None = None) -> FaultService:
    env = {
        "IRQ_SERVED_MODEL": REPORTED[name],
        "IRQ_STRUCTURED_OUTPUT_BACKEND": ENTRIES[name][1],
    }
    return start_fault_service(tmp_path, latency_s=0.05, env=env, port=port, name=f"{name}-{free_port()}")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, FaultService]]:
    started = {name: start_service(tmp_path, name) for name in ENTRIES}
    yield started
    for service in started.values():
        service.service.stop()


@pytest.fixture
def deployment(
    sqlite_url: str, redis_url: str, tmp_path: Path, services: dict[str, FaultService]
) -> Iterator[Stack]:
    """One API and one `irq worker` serving every endpoint of the registry."""
    registry = registry_file(tmp_path / "endpoints.toml", services)
    stack = start_stack(
        sqlite_url, redis_url, None, tmp_path, env={"IRQ_ENDPOINTS_FILE": str(registry)}, worker=False
    )
    stack.start_worker()
    stack.wait_workers(len(ENTRIES))
    yield stack
    stop_stack(stack)


def submit(http: httpx.Client, prompt: str, **route: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", json={"prompt": prompt, **route})
    assert response.status_code == 202, response.text
    return dict(response.json())


def prompts_seen(service: FaultService) -> set[str]:
    return set(service.calls())


def test_jobs_run_on_the_endpoint_of_their_model_and_backend_and_a_wrong_model_fails_them(
    deployment: Stack, services: dict[str, FaultService]
) -> None:
    beta_with_backend = {"model": "sim-beta", "backend": "xgrammar"}
    routes = [{}, {"model": "sim-alpha"}, {"model": "sim-beta"}, beta_with_backend]
    with deployment.client() as http, concurrent.futures.ThreadPoolExecutor(16) as pool:
        asked = list(
            pool.map(lambda i: (routes[i % 4], submit(http, f"job {i}", **routes[i % 4])), range(80))
        )
        liar = submit(http, "the liar's job", model="sim-gamma")
        done = {job["id"]: deployment.wait_for(http, job["id"], 60) for _, job in asked}
        lied = deployment.wait_for(http, liar["id"], 60)

    expected = {"sim-alpha": "alpha", "sim-beta": "beta"}
    for route, job in asked:
        final = done[job["id"]]
        model = route.get("model", "sim-alpha")
        assert final["status"] == "succeeded", final
        assert (final["model"], final["backend"], final["endpoint"]) == (model, ENTRIES[expected[model]][1],
                                                                          expected[model])  # fmt: skip
    # Each service got exactly the prompts of its own model, each once.
    alpha, beta = services["alpha"].calls(), services["beta"].calls()
    assert set(alpha) == {f"job {i}" for i in range(80) if i % 4 < 2} and set(alpha.values()) == {1}
    assert set(beta) == {f"job {i}" for i in range(80) if i % 4 >= 2} and set(beta.values()) == {1}

    assert lied["status"] == "failed" and lied["error"]["code"] == "model_mismatch"
    assert "sim-impostor" in lied["error"]["message"] and lied["result"] is None
    assert lied["attempts"] == 1  # a misconfigured endpoint is not asked again


def test_a_dead_endpoint_holds_back_only_its_own_jobs_and_they_run_when_it_returns(
    deployment: Stack, services: dict[str, FaultService], tmp_path: Path
) -> None:
    beta = services["beta"]
    port = int(beta.base.rsplit(":", 1)[1])
    beta.service.kill()
    with deployment.client() as http:
        waiting = [submit(http, f"beta while down {i}", model="sim-beta") for i in range(12)]
        flowing = [submit(http, f"alpha meanwhile {i}", model="sim-alpha") for i in range(12)]
        for job in flowing:
            assert deployment.wait_for(http, job["id"], 30)["status"] == "succeeded"

        def gate_closed() -> bool:
            ready = http.get("/readyz").json()
            return str(ready["endpoints"].get("beta", "")).startswith("down")

        wait_until(gate_closed, 30, "the API to show beta down")
        jobs = [http.get(f"/v1/jobs/{job['id']}").json() for job in waiting]
        # Waiting, not failing: none spent an attempt or its deadline on the dead endpoint.
        assert {(j["status"], j["attempts"], j["timings"]["started_at"]) for j in jobs} == {
            ("queued", 0, None)
        }
        stats = http.get("/v1/stats").json()
        by_name = {e["name"]: e for e in stats["endpoints"]}
        assert by_name["beta"]["state"] == "down" and by_name["alpha"]["state"] == "up"

        services["beta"] = back = start_service(tmp_path, "beta", port=port)
        finished = [deployment.wait_for(http, job["id"], 60) for job in waiting]
    assert {(j["status"], j["endpoint"], j["attempts"]) for j in finished} == {("succeeded", "beta", 1)}
    assert set(back.calls()) == {f"beta while down {i}" for i in range(12)}
    assert not prompts_seen(services["alpha"]) & {f"beta while down {i}" for i in range(12)}


def test_an_unserved_model_or_backend_is_refused_naming_what_is_served_and_nothing_is_stored(
    deployment: Stack,
) -> None:
    with deployment.client() as http:
        models = http.get("/v1/models").json()
        assert models["object"] == "list"
        assert {(m["id"], m["object"], tuple(m["backends"]), m["default"]) for m in models["data"]} == {
            ("sim-alpha", "model", ("guidance",), True),
            ("sim-beta", "model", ("xgrammar",), False),
            ("sim-gamma", "model", ("guidance",), False),
        }
        for route in ({"model": "gpt-4o"}, {"model": "sim-beta", "backend": "guidance"}, {"backend": "auto"}):
            refused = http.post("/v1/jobs", json={"prompt": "p", **route})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "model_not_served"
            assert "sim-alpha (guidance)" in error["message"] and "sim-beta (xgrammar)" in error["message"]
        line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "p"}]}}  # fmt: skip
        batch = http.post("/v1/batches", content=json.dumps(line) + "\n")
        assert batch.status_code == 422 and "job 1" in batch.json()["error"]["message"]
        # The same line with the model chosen for the whole batch is accepted.
        chosen = http.post("/v1/batches", params={"model": "sim-beta"}, content=json.dumps(line) + "\n")
        assert chosen.status_code == 202, chosen.text
    with deployment.db.engine.connect() as conn:
        assert conn.execute(text("SELECT model, backend FROM jobs")).all() == [("sim-beta", "xgrammar")]
    assert deployment.queue_length() <= 1


def test_the_migration_keeps_existing_jobs_labels(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0006")
    db = Database(sqlite_url)
    rows = [
        ("01000000-0000-7000-8000-000000000001", "Qwen/Qwen2.5-Coder-7B-Instruct", "xgrammar", "succeeded",
         "http://gpu-a:8001/generate"),
        ("01000000-0000-7000-8000-000000000002", "Qwen/Qwen3-Next-80B-A3B-Instruct-FP8", "guidance", "failed",
         "modal://irq-inference-guidance/Inference.generate"),
        ("01000000-0000-7000-8000-000000000003", "SmolLM2-135M-Instruct", None, "queued", None),
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, is_admin, created_at) "
                "VALUES ('k', 'irq_x', 'h', 0, '2026-11-30 00:00:00')"
            )
        )
        for job_id, model, backend, status, endpoint in rows:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, prompt, schema, schema_hash, model, backend, "
                    "max_tokens, temperature, top_p, priority, timeout_s, status, attempts, max_attempts, "
                    "created_at, endpoint, retry_truncated, bounded) VALUES (:id, 1, 'p', '{}', 'h', "
                    ":model, :backend, 64, 0.3, 0.95, 5, 60, :status, 1, 3, '2026-11-30 00:00:00', "
                    ":endpoint, 1, 0)"
                ),
                dict(id=job_id, model=model, backend=backend, status=status, endpoint=endpoint),
            )
    upgrade(sqlite_url)
    with db.engine.connect() as conn:
        after = conn.execute(text("SELECT id, model, backend, status, endpoint FROM jobs ORDER BY id")).all()
    db.dispose()
    assert [tuple(r) for r in after] == rows
