"""The statements on the files and openai_batches tables (the OpenAI-compatible API's uploads and batches).
Every read is scoped to an owner: another key's file or batch does not exist for a caller, nor does a text
that is no id (it is not looked up: some, a NUL character, the database would refuse)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Executable, Table, delete, insert, select, update

from irq.clock import is_id
from irq.files import is_file_id
from irq.store.db import Database
from irq.store.jobs import Also
from irq.store.models import OpenAIBatch, StoredFile

FILES = cast(Table, StoredFile.__table__)
OPENAI_BATCHES = cast(Table, OpenAIBatch.__table__)
_FILE_COLUMNS = [attr.key for attr in StoredFile.__mapper__.column_attrs]
_BATCH_COLUMN = {attr.key: attr.columns[0].key for attr in OpenAIBatch.__mapper__.column_attrs}


def _file(row: Any) -> StoredFile:
    return StoredFile(**{name: row._mapping[name] for name in _FILE_COLUMNS})


def _batch(row: Any) -> OpenAIBatch:
    return OpenAIBatch(**{attr: row._mapping[column] for attr, column in _BATCH_COLUMN.items()})


class FileRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- files ------------------------------------------------------------------------------

    def add_file(self, values: dict[str, Any]) -> StoredFile:
        with self.db.engine.begin() as conn:
            conn.execute(insert(FILES), [values])
        return StoredFile(**values)

    def file(self, owner_id: int, file_id: str) -> StoredFile | None:
        if not is_file_id(file_id):
            return None
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(FILES).where(FILES.c.id == file_id, FILES.c.owner_id == owner_id)
            ).one_or_none()
        return None if row is None else _file(row)

    def files(self, owner_id: int, purpose: str | None, after: str | None, limit: int) -> list[StoredFile]:
        """Newest first; `after` is the id of the last file of the previous page."""
        q = select(FILES).where(FILES.c.owner_id == owner_id)
        if purpose is not None:
            q = q.where(FILES.c.purpose == purpose)
        if after is not None:
            q = q.where(FILES.c.id < after)
        with self.db.engine.connect() as conn:
            return [_file(row) for row in conn.execute(q.order_by(FILES.c.id.desc()).limit(limit))]

    def delete_file(self, owner_id: int, file_id: str) -> bool:
        if not is_file_id(file_id):
            return False
        with self.db.engine.begin() as conn:
            q = delete(FILES).where(FILES.c.id == file_id, FILES.c.owner_id == owner_id)
            return bool(conn.execute(q).rowcount)

    # --- batches ----------------------------------------------------------------------------

    def add_batch(self, values: dict[str, Any]) -> OpenAIBatch:
        """Insert an OpenAI batch (`OpenAIBatch` attribute values)."""
        with self.db.engine.begin() as conn:
            conn.execute(insert(OPENAI_BATCHES), [{_BATCH_COLUMN[k]: v for k, v in values.items()}])
        return OpenAIBatch(**values)

    @staticmethod
    def batch_insert(values: dict[str, Any]) -> Also:
        """An OpenAI batch's insert (`OpenAIBatch` attribute values but its id, which is its irq batch's),
        for the transaction that inserts its irq batch and jobs (`JobManager.submit_batch`)."""

        def statements(batch_id: str) -> list[Executable]:
            row = {_BATCH_COLUMN[k]: v for k, v in {**values, "id": batch_id}.items()}
            return [insert(OPENAI_BATCHES).values(row)]

        return statements

    def batch(self, owner_id: int, batch_id: str) -> OpenAIBatch | None:
        if not is_id(batch_id):
            return None
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(OPENAI_BATCHES).where(
                    OPENAI_BATCHES.c.id == batch_id, OPENAI_BATCHES.c.owner_id == owner_id
                )
            ).one_or_none()
        return None if row is None else _batch(row)

    def batches(self, owner_id: int, after: str | None, limit: int) -> list[OpenAIBatch]:
        """Newest first; `after` is the id of the last batch of the previous page."""
        q = select(OPENAI_BATCHES).where(OPENAI_BATCHES.c.owner_id == owner_id)
        if after is not None:
            q = q.where(OPENAI_BATCHES.c.id < after)
        with self.db.engine.connect() as conn:
            rows = conn.execute(q.order_by(OPENAI_BATCHES.c.id.desc()).limit(limit))
            return [_batch(row) for row in rows]

    def mark_expired(self, batch_id: str, values: dict[str, Any]) -> bool:
        """Set `expired_at` once; False if it was already set."""
        q = (
            update(OPENAI_BATCHES)
            .where(OPENAI_BATCHES.c.id == batch_id, OPENAI_BATCHES.c.expired_at.is_(None))
            .values(values)
        )
        with self.db.engine.begin() as conn:
            return bool(conn.execute(q).rowcount)
