"""`/openai/v1/files`: upload (multipart, spooled to disk and copied to `FileStorage` a chunk at a time),
list, retrieve, content, delete. A batch's output and error files are listed with it and made from its
jobs when read. An upload that is refused, or whose record cannot be written, keeps no bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import ApiError
from api.openai.objects import (
    ERROR_FILE,
    OUTPUT_FILE,
    FileDeleted,
    FileList,
    FileObject,
    checked_cursor,
    checked_text,
    output_line,
)
from irq.clock import is_id, utcnow
from irq.error_codes import ErrorCode
from irq.files import FileTooLarge, is_file_id, new_file_id
from irq.store.models import Batch, JobStatus

router = APIRouter(tags=["openai"])


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, ErrorCode.not_found, f"No such File object: {file_id}", param="id")


def _batch_file(svc: Services, owner_id: int, file_id: str) -> tuple[Batch, bool] | None:
    """The irq batch behind an output (True) or error (False) file id, if it is this owner's."""
    for prefix, output in ((OUTPUT_FILE, True), (ERROR_FILE, False)):
        batch_id = file_id.removeprefix(prefix)
        if batch_id != file_id and is_id(batch_id):
            batch = svc.store.get_batch(batch_id, owner_id)
            return None if batch is None else (batch, output)
    return None


def _result_lines(svc: Services, batch: Batch, output: bool) -> Iterator[bytes]:
    for job in svc.store.batch_jobs(batch.id):
        if JobStatus(job.status).terminal and (job.status == JobStatus.succeeded) == output:
            yield output_line(job).encode()


@router.post("/files", response_model=FileObject)
async def upload_file(
    request: Request,
    svc: ServicesDep,
    who: PrincipalDep,
    file: UploadFile,
    purpose: Annotated[Literal["batch"], Form(description="Only `batch` files are taken.")],
) -> FileObject:
    unknown = sorted(set((await request.form()).keys()) - {"file", "purpose"})
    if unknown:
        message = f"unknown form field(s): {unknown}"
        raise ApiError(400, ErrorCode.unknown_parameter, message, param=unknown[0])
    filename = checked_text((file.filename or "upload.jsonl")[:255], "filename")
    file_id = new_file_id()
    try:
        size, lines = await run_in_threadpool(
            svc.storage.save, file_id, file.file, svc.settings.max_file_bytes
        )
    except FileTooLarge as exc:
        raise ApiError(413, ErrorCode.file_too_large, str(exc), param="file") from None
    try:
        if lines > svc.settings.max_file_lines:
            limit = svc.settings.max_file_lines
            message = f"the file has {lines} lines; the limit is {limit}"
            raise ApiError(400, ErrorCode.too_many_lines, message, param="file")
        values = dict(id=file_id, owner_id=who.key_id, filename=filename, purpose=purpose, bytes=size,
                      lines=lines, created_at=utcnow())  # fmt: skip
        return FileObject.of(await run_in_threadpool(svc.files.add_file, values))
    except Exception:
        # Refused, or not recorded (the store is down): no bytes without a row. Not on a cancelled request:
        # its insert goes on in its thread and may still record the file (if it fails, the sweeper deletes
        # the bytes, `irq/retention.py`).
        svc.storage.delete(file_id)
        raise


@router.get("/files", response_model=FileList)
def list_files(
    svc: ServicesDep,
    who: PrincipalDep,
    purpose: str | None = None,
    after: str | None = Query(default=None, description="The last id of the previous page."),
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> FileList:
    purpose = checked_text(purpose, "purpose")
    found = svc.files.files(who.key_id, purpose, checked_cursor(after, is_file_id), limit + 1)
    page = [FileObject.of(f) for f in found[:limit]]
    return FileList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                    has_more=len(found) > limit)  # fmt: skip


@router.get("/files/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, svc: ServicesDep, who: PrincipalDep) -> FileObject:
    stored = svc.files.file(who.key_id, file_id)
    if stored is not None:
        return FileObject.of(stored)
    made = _batch_file(svc, who.key_id, file_id)
    if made is None:
        raise _not_found(file_id)
    batch, output = made
    size = sum(len(line) for line in _result_lines(svc, batch, output))
    name = f"{batch.id}_{'output' if output else 'error'}.jsonl"
    return FileObject(id=file_id, bytes=size, created_at=int(batch.created_at.timestamp()), filename=name,
                      purpose="batch_output")  # fmt: skip


@router.get("/files/{file_id}/content", response_class=StreamingResponse)
def file_content(file_id: str, svc: ServicesDep, who: PrincipalDep) -> StreamingResponse:
    stored = svc.files.file(who.key_id, file_id)
    if stored is not None:
        return StreamingResponse(svc.storage.chunks(stored.id), media_type="application/octet-stream")
    made = _batch_file(svc, who.key_id, file_id)
    if made is None:
        raise _not_found(file_id)
    return StreamingResponse(_result_lines(svc, *made), media_type="application/jsonl")


@router.delete("/files/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, svc: ServicesDep, who: PrincipalDep) -> FileDeleted:
    if not svc.files.delete_file(who.key_id, file_id):
        raise _not_found(file_id)
    svc.storage.delete(file_id)
    return FileDeleted(id=file_id, deleted=True)
