"""`/metrics` in Prometheus's text format, read from the store (the truth, shared by every API and worker
process) and from Redis (the queue depth) at each scrape.

Job counts by status, model and backend; latency histograms (queue wait, time to first token,
generation, total) and tokens/s over finished jobs; failed jobs by error code; per inference endpoint,
whether it is up, the jobs running on it, and the depth of its queue. No prompts, results or keys: the
endpoint needs no API key, like `/healthz`.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.deps import Services, ServicesDep
from api.routes.endpoints import endpoint_statuses
from irq.store import reads
from irq.store.db import Database

router = APIRouter(tags=["health"])

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKENS_PER_S_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
# (metric, help, column, the column's unit in the metric's unit, buckets)
HISTOGRAMS = (
    ("irq_job_queue_wait_seconds", "Last enqueue to start of finished jobs.", "queue_wait_ms", 1000.0,
     SECONDS_BUCKETS),
    ("irq_job_ttft_seconds", "Time to first token, as the inference service measured it.", "ttft_ms", 1000.0,
     SECONDS_BUCKETS),
    ("irq_job_generation_seconds", "Generation time of finished jobs.", "generation_ms", 1000.0,
     SECONDS_BUCKETS),
    ("irq_job_total_seconds", "Created to finished.", "total_ms", 1000.0, SECONDS_BUCKETS),
    ("irq_job_tokens_per_second", "Output tokens/s of finished jobs.", "tokens_per_s", 1.0,
     TOKENS_PER_S_BUCKETS),
)  # fmt: skip


class StoreCollector(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.db = svc.db

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("irq_jobs", "Jobs by status.", labels=["status", "model", "backend"])
        for status, model, backend, n in reads.status_counts(self.db):
            jobs.add_metric([status, model, backend or ""], n)
        yield jobs
        for name, doc, column, scale, buckets in HISTOGRAMS:
            yield _histogram(self.db, name, doc, column, scale, buckets)
        errors = GaugeMetricFamily("irq_job_errors", "Failed jobs by error code.", labels=["code", "model"])
        for code, model, n in reads.error_counts(self.db):
            errors.add_metric([code or "", model], n)
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
    db: Database, name: str, doc: str, column: str, scale: float, buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """A cumulative histogram of `column / scale` over the jobs that have a value, per model and backend."""
    family = HistogramMetricFamily(name, doc, labels=["model", "backend"])
    for h in reads.histograms(db, column, [bound * scale for bound in buckets]):
        rows = [(str(bound), n) for bound, n in zip(buckets, h.cumulative, strict=True)]
        family.add_metric([h.model, h.backend or ""], [*rows, ("+Inf", h.jobs)], h.total / scale)
    return family


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(svc: ServicesDep) -> Response:
    registry = CollectorRegistry()
    registry.register(StoreCollector(svc))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
