"""`/openai/v1/batches`: create from an uploaded file, retrieve, list, cancel.

Creating a batch validates every line of its file as a single submit is checked (the chat request's mapping,
the model served, the limits, the schema compiled with llguidance in bounded time), reading the file a line at
a time (`irq/submission/lines.py`). A file with bad lines makes a `failed` batch whose `errors` name each line
(up to `MAX_LINE_ERRORS`), and no job; a good one becomes an irq batch of the same id, one job per line, and
the answer is `in_progress` (validation happens within the create request, so `validating` is never seen). The
OpenAI batch, its irq batch and its jobs are written in one transaction: a create cut short (the API killed)
left either all of them, listed and running, or nothing. A create is idempotent: under the same
`Idempotency-Key`, or without one from the same input file, it finds the batch made before (a client retrying
a create whose answer it lost never runs a file twice); to run a file again, send a new key. Statuses follow
from the jobs: `completed` once all have ended, `cancelling` → `cancelled` after a cancel, and `expired` once
the completion window passes with jobs still waiting (they end as `batch_expired`, the others keep their
results).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import ApiError
from api.openai.objects import BatchList, BatchObject, batch_object, checked_cursor
from irq.clock import is_id, new_id, utcnow
from irq.error_codes import ErrorCode
from irq.files import is_file_id
from irq.store.models import ACTIVE, OpenAIBatch
from irq.submission.errors import IdempotencyKeyReused
from irq.submission.lines import CHAT_COMPLETIONS, Lines, read_file
from irq.submission.rules import Text

router = APIRouter(tags=["openai"], route_class=StrictJSONRoute)

WINDOWS = {"24h": timedelta(hours=24)}
FILE_KEY = "openai-file:"  # + the input file's id: the idempotency key of a create that sends none


MetadataKey = Annotated[Text, Field(max_length=64)]
MetadataValue = Annotated[Text, Field(max_length=512)]


class BatchCreate(BaseModel):
    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(description=f"Only `{CHAT_COMPLETIONS}`.")
    completion_window: str = Field(description="Only `24h`.")
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None, max_length=16, description="Up to 16 pairs: keys of 64 characters, values of 512."
    )


def _made_before(svc: Services, owner_id: int, key: str, body: BatchCreate) -> OpenAIBatch | None:
    """The batch an earlier create under `key` made, if any; a refusal if that create asked for another
    file or other metadata."""
    made = svc.store.batch_by_idempotency_key(owner_id, key)
    if made is None:
        return None
    ob = svc.files.batch(owner_id, made.id)
    if ob is not None and (ob.input_file_id, ob.metadata_) == (body.input_file_id, body.metadata):
        return ob
    if key.startswith(FILE_KEY):
        message = (f"batch {made.id} was already created from this file with other metadata; send an "
                   "Idempotency-Key to create another")  # fmt: skip
        raise ApiError(409, ErrorCode.input_file_in_use, message, param="input_file_id")
    raise IdempotencyKeyReused()


def _create(svc: Services, owner_id: int, body: BatchCreate, key: str) -> OpenAIBatch:
    if not is_file_id(body.input_file_id):
        raise ApiError(
            404, ErrorCode.not_found, f"No such File object: {body.input_file_id}", param="input_file_id"
        )
    made = _made_before(svc, owner_id, key, body)
    if made is not None:
        return made
    stored = svc.files.file(owner_id, body.input_file_id)
    if stored is None or stored.purpose != "batch":
        raise ApiError(
            404, ErrorCode.not_found, f"No such File object: {body.input_file_id}", param="input_file_id"
        )
    lines = Lines(svc.settings, svc.jobs.registry, owner_id, openai_file=True)
    news, errors = read_file(svc.storage.lines(stored.id), lines)
    now = utcnow()
    record: dict[str, Any] = dict(
        owner_id=owner_id,
        input_file_id=stored.id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata_=body.metadata,
        created_at=now,
        expires_at=now + WINDOWS[body.completion_window],
        errors=None,
        failed_at=None,
        expired_at=None,
    )
    if errors:
        return svc.files.add_batch({**record, "id": new_id(), "errors": errors, "failed_at": now})
    svc.check_quota(owner_id, adding=len(news))
    # The OpenAI batch is written with its irq batch and jobs, in their transaction.
    own_row = svc.files.batch_insert(record)
    batch, created = svc.jobs.submit_batch(owner_id, news, key, also=own_row)  # its errors: api/errors.py
    if not created:  # a create under the same key won the race
        made = _made_before(svc, owner_id, key, body)
        assert made is not None  # its irq batch was found, and it names one with an OpenAI record
        return made
    svc.active.added(owner_id, len(news))
    return OpenAIBatch(**{**record, "id": batch.id})


def _view(svc: Services, ob: OpenAIBatch) -> BatchObject:
    """The batch now; a window that has passed with jobs still waiting ends them first."""
    batch = svc.store.get_batch(ob.id, ob.owner_id) if ob.failed_at is None else None
    counts = svc.store.batch_counts(ob.id) if batch is not None else {}
    waiting = sum(counts.get(s, 0) for s in ACTIVE)
    if batch is not None and waiting and ob.expired_at is None and utcnow() >= ob.expires_at:
        if batch.cancelled_at is None and svc.files.mark_expired(ob.id, {"expired_at": utcnow()}):
            svc.jobs.expire_batch(ob.id)
            ob = svc.files.batch(ob.owner_id, ob.id) or ob
            counts = svc.store.batch_counts(ob.id)
    last = svc.store.batch_last_finished(ob.id) if batch is not None else None
    return batch_object(ob, batch, counts, last)


def _owned(svc: Services, owner_id: int, batch_id: str) -> OpenAIBatch:
    ob = svc.files.batch(owner_id, batch_id)
    if ob is None:
        raise ApiError(404, ErrorCode.not_found, f"No such Batch object: {batch_id}", param="batch_id")
    return ob


@router.post("/batches", response_model=BatchObject)
async def create_batch(
    body: BatchCreate,
    svc: ServicesDep,
    who: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="A create under a key used before answers the batch it made (without one, the "
            "input file is the key).",
        ),
    ] = None,
) -> BatchObject:
    if body.endpoint != CHAT_COMPLETIONS:
        raise ApiError(
            400, ErrorCode.invalid_endpoint, f"`endpoint` must be {CHAT_COMPLETIONS}", param="endpoint"
        )
    if body.completion_window not in WINDOWS:
        message = "`completion_window` must be 24h"
        raise ApiError(400, ErrorCode.invalid_completion_window, message, param="completion_window")
    # Apart from the keys of irq's own /v1/batches, whose batches have no OpenAI record.
    key = f"openai:{idempotency_key}" if idempotency_key is not None else FILE_KEY + body.input_file_id
    # In a thread: reading the file and checking its schemas block.
    ob = await run_in_threadpool(_create, svc, who.key_id, body, key)
    return await run_in_threadpool(_view, svc, ob)


@router.get("/batches", response_model=BatchList)
def list_batches(
    svc: ServicesDep,
    who: PrincipalDep,
    after: str | None = Query(default=None, description="The last id of the previous page."),
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    found = svc.files.batches(who.key_id, checked_cursor(after, is_id), limit + 1)
    page = [_view(svc, ob) for ob in found[:limit]]
    return BatchList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                     has_more=len(found) > limit)  # fmt: skip


@router.get("/batches/{batch_id}", response_model=BatchObject)
def retrieve_batch(batch_id: str, svc: ServicesDep, who: PrincipalDep) -> BatchObject:
    return _view(svc, _owned(svc, who.key_id, batch_id))


@router.post("/batches/{batch_id}/cancel", response_model=BatchObject)
def cancel_batch(batch_id: str, svc: ServicesDep, who: PrincipalDep) -> BatchObject:
    ob = _owned(svc, who.key_id, batch_id)
    batch = svc.store.get_batch(ob.id, who.key_id) if ob.failed_at is None else None
    if batch is None or ob.expired_at is not None:
        raise ApiError(
            409, ErrorCode.batch_not_cancellable, f"batch {batch_id} has already ended", param="batch_id"
        )
    if batch.cancelled_at is None:
        if not any(svc.store.batch_counts(ob.id).get(s) for s in ACTIVE):
            raise ApiError(
                409, ErrorCode.batch_not_cancellable, f"batch {batch_id} has completed", param="batch_id"
            )
        svc.jobs.cancel_batch(batch)
    return _view(svc, ob)
