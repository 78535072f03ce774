"""`/metrics` in Prometheus's text format, read at each scrape from the store (the truth, shared by every
API and worker process: its totals of finished jobs, `irq/store/rollups.py`, a small table whatever the
jobs table holds, and the jobs active now) and from Redis (the queue depth).

Job counts by status, model and backend; latency histograms (queue wait, engine wait, time to first
token, generation, total) and tokens/s over finished jobs; failed jobs by error code; per inference endpoint,
whether it is up, the jobs running on it, and the depth of its queue. No prompts, results or keys: the
endpoint needs no API key, like `/healthz`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.deps import Services, ServicesDep
from api.routes.endpoints import endpoint_statuses
from irq.store import reads, rollups
from irq.store.models import JobStatus

router = APIRouter(tags=["health"])

# (metric, help, column): the buckets of each are the rollups' (`rollups.METRIC_BOUNDS`).
HISTOGRAMS = (
    ("irq_job_queue_wait_seconds", "Last enqueue to start of finished jobs.", "queue_wait_ms"),
    (
        "irq_job_engine_wait_seconds",
        "Accepted by the inference service to first scheduled.",
        "engine_wait_ms",
    ),
    ("irq_job_ttft_seconds", "Time to first token, from the engine's first step on the job.", "ttft_ms"),
    ("irq_job_generation_seconds", "Generation time of finished jobs.", "generation_ms"),
    ("irq_job_total_seconds", "Created to finished.", "total_ms"),
    ("irq_job_tokens_per_second", "Output tokens/s of finished jobs.", "tokens_per_s"),
)


class StoreCollector(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.db = svc.reads_db

    def collect(self) -> Iterator[Metric]:
        totals = self.svc.aggregates.call(rollups.totals)
        jobs = GaugeMetricFamily("irq_jobs", "Jobs by status.", labels=["status", "model", "backend"])
        by_status: dict[tuple[str, str, str], int] = defaultdict(int)
        for (model, backend, status, _), total in totals.items():
            by_status[(status, model, backend)] += total.jobs
        for status, model, active_backend, n in reads.active_by_model(self.db):
            by_status[(status, model, active_backend or "")] += n
        for group, n in sorted(by_status.items()):
            jobs.add_metric(list(group), n)
        yield jobs
        for name, doc, column in HISTOGRAMS:
            yield _histogram(totals, name, doc, column)
        errors = GaugeMetricFamily("irq_job_errors", "Failed jobs by error code.", labels=["code", "model"])
        by_code: dict[tuple[str, str], int] = defaultdict(int)
        for (model, _, status, code), total in totals.items():
            if status == JobStatus.failed:
                by_code[(code, model)] += total.jobs
        for (code, model), n in sorted(by_code.items()):
            errors.add_metric([code, model], n)
        yield errors
        labels = ["endpoint", "model", "backend"]
        up = GaugeMetricFamily("irq_endpoint_up", "1 while the endpoint's workers reach it.", labels=labels)
        running = GaugeMetricFamily("irq_endpoint_running", "Jobs running on the endpoint.", labels=labels)
        depth = GaugeMetricFamily(
            "irq_queue_depth",
            "Messages waiting in the endpoint's queue (shared with its replicas).",
            labels=labels,
        )
        for e in endpoint_statuses(self.svc):
            values = [e.name, e.model, e.backend]
            if e.state != "no_worker":
                up.add_metric(values, 1.0 if e.state == "up" else 0.0)
            running.add_metric(values, e.running)
            if e.queued is not None:  # Redis down: left out rather than reported as 0
                depth.add_metric(values, e.queued)
        yield from (up, running, depth)


def _histogram(
    totals: dict[tuple[str, str, str, str], rollups.Total], name: str, doc: str, column: str
) -> HistogramMetricFamily:
    """A cumulative histogram of `column` in the metric's unit over the jobs that have a value, per model and
    backend."""
    bounds, scale = rollups.METRIC_BOUNDS[column]
    merged: dict[tuple[str, str], rollups.Total] = defaultdict(rollups.Total)
    for (model, backend, _, _), total in totals.items():
        if column in total.timings:
            merged[(model, backend)].merge(rollups.Total(0, {column: total.timings[column]}))
    family = HistogramMetricFamily(name, doc, labels=["model", "backend"])
    for (model, backend), total in sorted(merged.items()):
        *under, everything = total.cumulative(column)
        rows = [(str(bound), n) for bound, n in zip(bounds, under, strict=True)]
        family.add_metric(
            [model, backend], [*rows, ("+Inf", everything)], total.timings[column]["sum"] / scale
        )
    return family


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(svc: ServicesDep) -> Response:
    registry = CollectorRegistry()
    registry.register(StoreCollector(svc))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
