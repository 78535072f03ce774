"""The clock and the ids: UTC timestamps and time-ordered job ids, for every module that stamps or mints."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_between(later: datetime | None, earlier: datetime | None) -> float | None:
    """Milliseconds from `earlier` to `later`; None where either is unknown."""
    return None if later is None or earlier is None else (later - earlier).total_seconds() * 1000.0


def new_id() -> str:
    """A time-ordered UUID (version 7 layout): 48 bits of Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0x0FFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def is_id(text: str) -> bool:
    """Whether `text` is an id as `new_id` writes them: anything else names no job or batch, and some
    (a NUL character) a database would refuse to even look up."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
