"""Each benchmark scenario at a small size, as `irq bench …` runs it: it finishes, every job succeeds, and
it writes its JSON figures and PNG plot. (The full sizes run by hand; docs/benchmarks.md.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.schemas import markdown, tally
from tests import ROOT

pytestmark = pytest.mark.timeout(300)


def bench(tmp_path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    run = subprocess.run(
        [sys.executable, "-m", "cli", "bench", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    name = args[0].replace("-", "_")  # the scenario writes <name>.json and <name>.png
    assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    return json.loads((tmp_path / f"{name}.json").read_text())  # type: ignore[no-any-return]


def test_queue_overhead(tmp_path: Path) -> None:
    result = bench(tmp_path, "overhead", "--jobs", "60", "--concurrency", "8")
    assert result["succeeded"] == 60
    assert result["irq_jobs_per_s"] > 0 and result["celery_noop_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["irq_jobs_per_s"] / result["celery_noop_per_s"])
    assert 0 <= result["irq_added_latency_ms"]["p50"] <= result["irq_added_latency_ms"]["p99"]


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_gpu_saturation(tmp_path: Path, pool: str) -> None:
    result = bench(
        tmp_path, "saturation", "--jobs", "40", "--latency", "0.5", "--slots", "8", "--worker-pool", pool
    )
    assert result["worker_pool"] == pool
    assert result["succeeded"] == 40
    assert result["ideal_makespan_s"] == 5 * 0.5
    # Nothing can beat the simulated service's own limit: 8 at once, 0.5 s each.
    assert result["makespan_s"] >= result["ideal_makespan_s"] * 0.98
    assert 0 < result["efficiency"] <= 1.02


def test_api_load(tmp_path: Path) -> None:
    result = bench(
        tmp_path, "api-load", "--rate", "20", "--duration", "2", "--steps", "40", "--step-duration", "2"
    )
    assert result["requests"] == 40
    assert result["errors"] == 0 and result["outcomes"] == {"202": 40}
    assert result["p50_ms"] <= result["p99_ms"]
    assert [step["rate"] for step in result["ramp"]] == [40]
    reference = result["minimal_submit_path"]["ramp"]  # the minimal submit path, same run, same rates
    assert [(step["rate"], step["errors"]) for step in reference] == [(40, 0)]
    assert result["cpu_ms_per_request"] > 0 and result["minimal_submit_path"]["cpu_ms_per_request"] > 0


def test_endpoint_comparison_through_one_deployment(tmp_path: Path) -> None:
    """One model served with two backends, one endpoint 10 ms and one 300 ms per request, and a third
    endpoint in the registry left out: the comparison runs the same jobs on the two named through one
    API and worker pool, tells them apart, significantly, and every document is schema-valid."""
    from tests.support import FaultService, start_fault_service, write_registry

    def served(backend: str, latency_s: float) -> FaultService:
        env = {"IRQ_SERVED_MODEL": "sim", "IRQ_STRUCTURED_OUTPUT_BACKEND": backend}
        return start_fault_service(tmp_path, latency_s, env=env, name=backend)

    fast, slow = served("guidance", 0.01), served("xgrammar", 0.3)
    registry = write_registry(
        tmp_path / "endpoints.toml",
        dict(name="fast", url=fast.url, model="sim", backend="guidance"),
        dict(name="slow", url=slow.url, model="sim", backend="xgrammar"),
        dict(name="unused", url="http://127.0.0.1:9/generate", model="sim", backend="auto"),
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"A function that returns {i}"}) + "\n" for i in range(12))
    )
    try:
        result = bench(
            tmp_path, "compare", "--endpoints-file", str(registry), "--endpoint", "fast",
            "--endpoint", "slow", "--prompts", str(prompts), "--concurrency", "4",
        )  # fmt: skip
        asked = {f"A function that returns {i}" for i in range(12)}
        assert set(fast.calls()) == set(slow.calls()) == asked
    finally:
        fast.service.stop()
        slow.service.stop()
    by_name = {b["name"]: b for b in result["summaries"]}
    assert by_name["fast"]["backend_reported"] == ["guidance"]
    assert by_name["slow"]["backend_reported"] == ["xgrammar"]
    assert by_name["fast"]["schema_valid_rate"] == by_name["slow"]["schema_valid_rate"] == 1.0
    assert by_name["fast"]["total_ms"]["p50"] < by_name["slow"]["total_ms"]["p50"]
    low, high = by_name["slow"]["total_ms"]["p50_ci"]
    assert low <= by_name["slow"]["total_ms"]["p50"] <= high
    (test,) = result["mann_whitney"]
    assert (test["a"], test["b"]) == ("fast", "slow") and test["p"] < 0.01
    assert "| fast |" in (tmp_path / "compare.md").read_text()


def test_cpu_split_store_calls_and_broker_calls_run() -> None:
    """The measuring scripts docs/benchmarks.md quotes: they finish and print their tables."""

    def script(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=280
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        return run.stdout

    split = script("bench.cpu_split", "--jobs", "60", "--concurrency", "8", "--window", "1")
    assert "60/60 jobs succeeded" in split
    assert all(name in split for name in ("api", "worker-0", "inference", "redis", "client"))
    calls = script("bench.store_calls", "--calls", "20")
    assert all(name in calls for name in ("create", "claim", "succeed"))
    broker = script("bench.broker_calls", "--calls", "20", "--rounds", "1")
    assert "kombu as shipped" in broker and "irq" in broker
    clients = script("bench.clients", "--jobs", "60", "--concurrency", "64", "--rounds", "1")
    assert "1 × 64" in clients and "2 × 32" in clients  # one pool of every connection, then pools of 32


def test_real_world_schemas_through_the_pipeline(tmp_path: Path, inference_url: str) -> None:
    """Two real-world schemas and one IR prompt, on the real local engine: every job is accounted for in
    its category, and no success is one that jsonschema refuses."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for name in ("Glaiveai2K__create_calendar_event_1cc9b5e0.json", "Github_easy__o58916.json"):
        (schemas / name).write_text((ROOT / "tests" / "data" / "jsonschemabench" / name).read_text())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Create a function that returns the maximum of a list"}) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "schemas", "--schemas", str(schemas),
         "--prompts", str(prompts), "--max-tokens", "96", "--inference-url", inference_url,
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    rows = json.loads((tmp_path / "schemas.json").read_text())["categories"]
    assert set(rows) == {"Glaiveai2K", "Github_easy", "IR (default schema)", "all"}
    everything = rows["all"]
    assert everything["jobs"] == 3
    outcomes = (
        "refused",
        "schema_valid",
        "hollow_successes",
        "truncated",
        "invalid_successes",
        "not_terminal",
    )
    ended = sum(everything.get(k, 0) for k in outcomes) + sum(everything["failures"].values())
    assert ended == 3  # every job is in exactly one column
    assert everything.get("invalid_successes", 0) == 0 and everything.get("not_terminal", 0) == 0
    assert "| all | 3 |" in (tmp_path / "schemas.md").read_text()


def test_the_schemas_tally_sets_hollow_successes_and_each_failure_code_apart() -> None:
    """A success whose document is an empty shell is no schema-valid success; failures are counted by code,
    per category and over all; truncations by what cut them (max_tokens, or a loop stopped early)."""
    open_object = {"type": "object"}
    jobs = [{"category": c, "schema": open_object, "body": {}} for c in ("A", "A", "A", "B", "B", "C", "C")]
    finished: list[dict[str, Any]] = [
        {"status": "succeeded", "result": {}},
        {"status": "succeeded", "result": {"name": "Ada"}},
        {"status": "failed", "error": {"code": "grammar_error"}},
        {"status": "failed", "error": {"code": "hollow_output"}, "bounded": True},
        {"status": "failed", "error": {"code": "prompt_too_long"}},
        {"status": "failed", "error": {"code": "output_truncated"}, "finish_reason": "length", "bounded": 1},
        {"status": "failed", "error": {"code": "output_truncated"}, "finish_reason": "repetition"},
    ]
    rows = tally(jobs, finished)
    assert rows["A"]["hollow_successes"] == 1 and rows["A"]["schema_valid"] == 1
    assert rows["A"]["failures"] == {"grammar_error": 1}
    assert (
        rows["B"]["failures"] == {"hollow_output": 1, "prompt_too_long": 1}
        and rows["B"]["bounded_retries"] == 1
    )
    assert rows["all"]["hollow_successes"] == 1 and sum(rows["all"]["failures"].values()) == 3
    table = markdown(rows)
    assert "hollow successes" in table.splitlines()[0]
    assert "| A | 3 | 3 | 1 | 33.3% | 0 | grammar_error 1 | 1 | 0 | 0 | 0 |" in table
    assert rows["C"]["truncated"] == 2 and rows["C"]["truncated_by"] == {"length": 1, "repetition": 1}
    assert "| C | 2 | 2 | 0 | 0.0% | 2 (length 1, repetition 1) | 0 | 0 | 0 | 0 | 1 |" in table


def test_the_store_benchmark_times_every_read_and_a_prune_keeps_the_counts(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "store", "--rows", "3000", "--span-days", "3",
         "--keep-days", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert (tmp_path / "store-sqlite.png").read_bytes().startswith(b"\x89PNG")
    result = json.loads((tmp_path / "store-sqlite.json").read_text())
    (step,) = result["steps"]
    assert step["rows"] == 3000 and all(ms > 0 for ms in step["reads_ms"].values())
    assert step["submit_ms"]["alone_p50"] <= step["submit_ms"]["alone_p99"]
    prune = result["prune"]
    # The jobs of all but the last of the 3 days pruned, and the stats of the whole span the same.
    assert 1500 < prune["pruned"] < 2500
    assert prune["same_counts"] and sum(prune["counts_after"].values()) >= 3000
