"""`/metrics` in Prometheus's text format, read from the store (the truth, shared by every API and worker
process) and from Redis (the queue depth) at each scrape.

Job counts by status, model and backend; latency histograms (queue wait, time to first token,
generation, total) and tokens/s over finished jobs; failed jobs by error code. No prompts, results or
keys: the endpoint needs no API key, like `/healthz`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from api.deps import ServicesDep
from irq.store.db import Database
from irq.store.models import Job
from worker.celery_app import queue_keys

router = APIRouter(tags=["health"])

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKENS_PER_S_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
HISTOGRAMS = (
    ("irq_job_queue_wait_seconds", "Last enqueue to start of finished jobs.", Job.queue_wait_ms, 1000.0),
    (
        "irq_job_ttft_seconds",
        "Time to first token, as the inference service measured it.",
        Job.ttft_ms,
        1000.0,
    ),
    ("irq_job_generation_seconds", "Generation time of finished jobs.", Job.generation_ms, 1000.0),
    ("irq_job_total_seconds", "Created to finished.", Job.total_ms, 1000.0),
)


class StoreCollector(Collector):
    def __init__(self, db: Database, redis: Any) -> None:
        self.db = db
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as s:
            jobs = GaugeMetricFamily("irq_jobs", "Jobs by status.", labels=["status", "model", "backend"])
            for status, model, backend, n in s.execute(
                select(Job.status, Job.model, Job.backend, func.count()).group_by(
                    Job.status, Job.model, Job.backend
                )
            ):
                jobs.add_metric([status, model, backend or ""], n)
            yield jobs
            for name, doc, column, scale in HISTOGRAMS:
                yield _histogram(s, name, doc, column, scale, SECONDS_BUCKETS)
            yield _histogram(
                s, "irq_job_tokens_per_second", "Output tokens/s of finished jobs.", Job.tokens_per_s, 1.0,
                TOKENS_PER_S_BUCKETS,
            )  # fmt: skip
            errors = GaugeMetricFamily(
                "irq_job_errors", "Failed jobs by error code.", labels=["code", "model"]
            )
            for code, model, n in s.execute(
                select(Job.error_code, Job.model, func.count())
                .where(Job.status == "failed")
                .group_by(Job.error_code, Job.model)
            ):
                errors.add_metric([code or "", model], n)
            yield errors
        depth = GaugeMetricFamily("irq_queue_depth", "Messages waiting in the Redis queue.")
        try:
            depth.add_metric([], sum(int(self.redis.llen(key)) for key in queue_keys()))
        except Exception:  # Redis down: the metric is left out rather than reported as 0
            return
        yield depth


def _histogram(
    session: Any, name: str, doc: str, column: Any, scale: float, buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """A cumulative histogram of `column / scale` over the jobs that have a value, per model and backend."""
    counts = [func.sum(case((column <= bound * scale, 1), else_=0)) for bound in buckets]
    query = (
        select(Job.model, Job.backend, func.count(column), func.sum(column), *counts)
        .where(column.is_not(None))
        .group_by(Job.model, Job.backend)
    )
    family = HistogramMetricFamily(name, doc, labels=["model", "backend"])
    for model, backend, total, summed, *cumulative in session.execute(query):
        rows = [(str(bound), int(n or 0)) for bound, n in zip(buckets, cumulative, strict=True)]
        family.add_metric([model, backend or ""], [*rows, ("+Inf", int(total))], float(summed or 0) / scale)
    return family


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(svc: ServicesDep) -> Response:
    registry = CollectorRegistry()
    registry.register(StoreCollector(svc.db, svc.redis))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
