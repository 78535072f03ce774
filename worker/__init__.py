"""Celery workers: claim a job, call the inference endpoint, validate, store the outcome."""
