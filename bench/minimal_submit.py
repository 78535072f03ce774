"""The reference for the API's submit rate: a minimal FastAPI + SQLAlchemy + Celery submit path, with no
auth, no schema check, no limits and no idempotency: a request body model, one ORM insert, one
`send_task`, a 202 answer. `irq bench api-load` measures it in the same run as irq's API, so the two rates
are compared on the same machine at the same moment (the machine's speed drifts between runs).

    BENCH_DATABASE_URL=sqlite:///… BENCH_REDIS_URL=redis://… python -m uvicorn bench.minimal_submit:app

The store gets irq's own engine settings (for SQLite: WAL, synchronous=NORMAL), so the comparison is
between the submit paths, not between database settings.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from irq.store.db import Database


class Base(DeclarativeBase):
    pass


class Submitted(Base):
    __tablename__ = "minimal_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    schema_: Mapped[dict[str, Any] | None] = mapped_column("schema", JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Submit(BaseModel):
    prompt: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class Accepted(BaseModel):
    id: str
    status: str


db = Database(os.environ.get("BENCH_DATABASE_URL", "sqlite:///minimal-submit.db"))
Base.metadata.create_all(db.engine)
celery = Celery("minimal", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1"))
app = FastAPI()


@app.post("/v1/jobs", status_code=202)
def submit(body: Submit) -> Accepted:
    job = Submitted(
        id=str(uuid.uuid4()),
        prompt=body.prompt,
        schema_=body.schema_,
        status="queued",
        created_at=datetime.now(UTC),
    )
    with db.session() as s:
        s.add(job)
    celery.send_task("bench.minimal", args=[job.id])
    return Accepted(id=job.id, status=job.status)
