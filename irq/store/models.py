"""SQLAlchemy models of the store: jobs, batches, API keys, and the files and batches of the
OpenAI-compatible surface."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the database keeps (SQLite keeps naive strings)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE = frozenset({JobStatus.queued, JobStatus.running})  # what a cancel stops and the quota counts


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; the key itself is never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Batch(Base):
    """Jobs submitted together; their own rows carry `batch_id`, `batch_index` and `custom_id`."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_batches_owner_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    total: Mapped[int]
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    request_hash: Mapped[str | None] = mapped_column(String(64))  # what the idempotency key was used for


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_batch_id", "batch_id"),
        Index("ix_jobs_owner_id_status", "owner_id", "status"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_jobs_finished_at", "finished_at"),  # the windows of /v1/stats and /dashboard
        Index("ix_jobs_status_endpoint", "status", "endpoint"),  # jobs running on each endpoint
        Index("ix_jobs_created_at", "created_at"),  # the window of /v1/stats' counts
        Index("ix_jobs_schema_hash", "schema_hash"),  # whether a job still names a stored schema
    )

    # Time-ordered UUIDs: ordering by id is ordering by creation, which cursor pagination relies on.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    batch_id: Mapped[str | None] = mapped_column(String(36))
    batch_index: Mapped[int | None]  # the job's place in its batch (the line of a JSONL upload)
    custom_id: Mapped[str | None] = mapped_column(
        String(255)
    )  # the client's name for it, as in OpenAI batches
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # what the idempotency key was used for

    prompt: Mapped[str] = mapped_column(Text)
    # A job's schema is stored once by its hash (`irq/store/schemas.py`); rows written before that keep a
    # copy here. The store fills it in on every read.
    schema_: Mapped[dict[str, Any] | None] = mapped_column("schema", JSON(none_as_null=True))
    schema_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str | None] = mapped_column(String(50))
    max_tokens: Mapped[int]
    temperature: Mapped[float] = mapped_column(Float)
    top_p: Mapped[float] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(default=5)
    timeout_s: Mapped[float] = mapped_column(Float)

    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    result: Mapped[Any | None] = mapped_column(JSON)
    # A failed generation's text (bounded), when it produced no document: truncated or not JSON.
    output_text: Mapped[str | None] = mapped_column(Text)
    # A job cut at max_tokens may run once more under its schema bounded to the token budget
    # (`irq/bounding/`); `bounded` says that its latest attempt did.
    retry_truncated: Mapped[bool] = mapped_column(default=True)
    bounded: Mapped[bool] = mapped_column(default=False)
    validation_error: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]

    created_at: Mapped[datetime]
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    first_started_at: Mapped[datetime | None]  # the job's `timeout_s` counts from here, over all attempts
    queue_wait_ms: Mapped[float | None] = mapped_column(Float)
    # In the inference service: accepted → the engine's first step on the job (its lock, vLLM's queue).
    engine_wait_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    generation_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)

    worker: Mapped[str | None] = mapped_column(String(255))
    # A running job belongs to its worker until then; the worker renews it while it runs the job.
    lease_expires_at: Mapped[datetime | None]

    @property
    def document_schema(self) -> dict[str, Any]:
        """The JSON Schema the job's document must match."""
        if self.schema_ is None:
            raise LookupError(f"job {self.id}: schema {self.schema_hash} was not read with it")
        return self.schema_

    @property
    def deadline_at(self) -> datetime | None:
        """When the job fails with `timeout`: `timeout_s` after its first start (a queued job has none,
        so time spent waiting for a free worker or a busy GPU never times a job out)."""
        if self.first_started_at is None:
            return None
        return self.first_started_at + timedelta(seconds=self.timeout_s)

    endpoint: Mapped[str | None] = mapped_column(String(500))  # the registry name of the one it ran on


class StoredFile(Base):
    """A file uploaded through the OpenAI-compatible API (`POST /openai/v1/files`); its bytes are kept by
    `irq.files.FileStorage`, not in the store."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner_id_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "file-…"
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int]
    created_at: Mapped[datetime]


class OpenAIBatch(Base):
    """A batch of the OpenAI-compatible API: its input file, window and metadata, the validation errors of a
    batch that failed, and (once valid) the irq batch of the same id whose jobs run its requests."""

    __tablename__ = "openai_batches"
    __table_args__ = (Index("ix_openai_batches_owner_id_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # also the irq batch's id
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    input_file_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    errors: Mapped[Any | None] = mapped_column(JSON)  # [{code, line, message, param}] of a failed validation
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]


class StoredSchema(Base):
    """One copy of a JSON Schema, named by the hash jobs carry (`irq/store/schemas.py`)."""

    __tablename__ = "schemas"
    __table_args__ = (Index("ix_schemas_used_at", "used_at"),)

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    used_at: Mapped[datetime]  # when a process last stored it (retention deletes it some time after)


class JobRollup(Base):
    """Finished jobs counted per period and group (`irq/store/rollups.py`): what `/v1/stats` and `/dashboard`
    read for the past, kept when the jobs themselves are pruned. A period is a minute, merged into its hour
    and then its day as it ages (`rollups.GRAINS`)."""

    __tablename__ = "job_rollups"
    __table_args__ = (Index("ix_job_rollups_grain", "period_s", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period_start: Mapped[datetime]
    period_s: Mapped[int]  # 60, 3600 or 86400
    owner_id: Mapped[int]
    model: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(50))  # "" for none
    endpoint: Mapped[str] = mapped_column(String(500))  # "" for none
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str] = mapped_column(String(64))  # "" for none
    jobs: Mapped[int]
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)  # column → {"n", "sum", "hist": {bucket: jobs}}


class JobTotal(Base):
    """Every job that ever finished, per model, backend, status and error code, with the histograms of
    `/metrics` (cumulative over its bounds): its one read of the past, whatever the jobs table holds."""

    __tablename__ = "job_totals"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    backend: Mapped[str] = mapped_column(String(50), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    jobs: Mapped[int]
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)  # column → {"n", "sum", "buckets": [jobs ≤ bound]}


class RollupMark(Base):
    """How far the rollups reach: every job finished before `rolled_until` is counted in them (one row)."""

    __tablename__ = "rollup_mark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rolled_until: Mapped[datetime]
