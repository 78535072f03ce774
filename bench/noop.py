"""A bare Celery app with one no-op task: the floor that irq's own queue overhead is measured against.

`python -m celery -A bench.noop worker --pool=threads`, broker and result backend from BENCH_REDIS_URL.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("noop", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(
    result_backend=app.conf.broker_url, worker_prefetch_multiplier=1, worker_hijack_root_logger=False
)


@app.task(name="bench.noop")
def noop() -> None:
    return None
