"""Whether a store has had irq's migrations, checked before a command touches it (`irq keys …`): a store
that is not there, or not migrated, is named with what to run instead of failing on a missing table."""

from __future__ import annotations

from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url

from irq.migrate import alembic_config
from irq.store.db import STORE_UNAVAILABLE


def store_problem(url: str) -> str | None:
    """Why the store at `url` cannot serve irq yet, and what to run about it; None when it is migrated to
    the newest revision. Never creates anything: a SQLite file that does not exist is not made."""
    parsed = make_url(url)
    where = parsed.render_as_string(hide_password=True)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        path = Path(database).resolve()
        if not database.startswith("file:") and not path.exists():
            return (
                f"there is no irq store at {path} (IRQ_DATABASE_URL={where}; a relative path is read "
                "from the current folder): run the command where the store is (`irq dev` keeps it in the "
                "folder it runs in), set IRQ_DATABASE_URL to it, or create a new store here with "
                "`irq db upgrade`"
            )
        where = str(path)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except STORE_UNAVAILABLE as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the store at {where} cannot be reached: {cause[0] if cause else type(exc).__name__}"
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if current == head:
        return None
    found = f"at revision {current}" if current else "has no irq tables"
    return f"the store at {where} {found}, and irq needs revision {head}: run `irq db upgrade`"
