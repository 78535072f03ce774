"""`/metrics` and `/v1/stats` over real HTTP after real jobs: Prometheus text that a scraper parses, and
rates, percentiles and cost per model and backend, from what the store holds."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import start_fault_service, start_stack, stop_stack


def test_metrics_count_jobs_and_histogram_their_latencies(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env={"IRQ_GPU_COST_PER_HOUR": "3.6"})
    try:
        with stack.client() as http:
            ok = [
                http.post("/v1/jobs", json={"prompt": f"A function that returns {i}"}).json()["id"]
                for i in range(3)
            ]
            bad = http.post("/v1/jobs", json={"prompt": "[faults: 400] refused"}).json()["id"]
            for job_id in [*ok, bad]:
                stack.wait_for(http, job_id, 60)
            stats = http.get("/v1/stats", params={"window": 600}).json()
            jobs = [http.get(f"/v1/jobs/{job_id}").json() for job_id in ok]
        scraped = httpx.get(stack.api + "/metrics", timeout=10)
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())

    assert value("irq_jobs", status="succeeded") == 3
    assert value("irq_jobs", status="failed") == 1
    assert value("irq_job_errors", code="injected_400") == 1
    endpoint = {"endpoint": "default", "model": "SmolLM2-135M-Instruct", "backend": "guidance"}
    assert value("irq_queue_depth", **endpoint) == 0 and value("irq_endpoint_running", **endpoint) == 0
    assert value("irq_endpoint_up", **endpoint) == 1  # as its worker saw it
    assert value("irq_job_generation_seconds_count", backend="guidance") == 3  # only jobs that generated
    assert value("irq_job_total_seconds_count") == 4
    buckets = sorted(
        (float(dict(ls)["le"]), v)
        for (n, ls), v in samples.items()
        if n == "irq_job_total_seconds_bucket" and dict(ls)["backend"] == "guidance"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), 4)

    (group,) = stats["groups"]
    assert (group["model"], group["backend"]) == ("SmolLM2-135M-Instruct", "guidance")
    assert (group["finished"], group["succeeded"], group["success_rate"]) == (4, 3, 0.75)
    assert group["schema_valid_rate"] == 1.0  # the refused job never produced a document
    totals = sorted(job["timings"]["total_ms"] for job in jobs)
    # Percentiles come from the rollups' log buckets, 2^(1/16) apart: within 2.2% of the exact value.
    assert group["total_ms"]["p50"] == pytest.approx(totals[1], rel=0.022)
    mean_generation_s = sum(job["timings"]["generation_ms"] for job in jobs) / 3 / 1000
    assert group["gpu_cost_per_job_usd"] == pytest.approx(mean_generation_s * 3.6 / 3600)
    (state,) = stats["endpoints"]
    assert (state["name"], state["state"], state["running"], state["queued"]) == ("default", "up", 0, 0)
