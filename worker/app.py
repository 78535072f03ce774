"""The workers' Celery app: irq's broker settings with the job task registered (`celery -A worker.app`)."""

from __future__ import annotations

from irq.broker import make_celery
from irq.settings import get_settings

celery_app = make_celery(get_settings(), include=["worker.tasks"])
