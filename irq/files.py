"""Where the bytes of uploaded files live: one interface, `FileStorage`, over a folder (`IRQ_FILES_DIR`).

A folder, not the SQL store: batch input files run to hundreds of megabytes, are written once, read
line by line and deleted whole, which a file system does with constant memory and the store would do
through large objects or chunk rows. Several API processes (or hosts) share the folder (a volume in
compose.yaml). Files are written to a temporary name and renamed when complete, so a reader never sees
half a file. Results are not kept as files: a batch's output and error files are made from its jobs'
rows when they are read.

The folder and the `files` table must agree. An upload whose row cannot be written deletes its bytes; what
a crash leaves between the two (bytes renamed, row never written; a `.partial` never renamed) the sweeper
finds with `leftovers` and deletes once it is older than any upload in progress could be
(`irq/retention.py`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from irq.clock import is_id, new_id

CHUNK = 1 << 20
PREFIX = "file-"  # + a time-ordered id: an uploaded file's id
PARTIAL = ".partial"


def new_file_id() -> str:
    return PREFIX + new_id()


def is_file_id(text: str) -> bool:
    """Whether `text` is an uploaded file's id as `new_file_id` writes them: anything else names no file
    (and some, a NUL character, a database would refuse to look up)."""
    return text.startswith(PREFIX) and is_id(text.removeprefix(PREFIX))


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is over {limit} bytes")


class FileStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, file_id: str) -> Path:
        if not file_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id

    def save(self, file_id: str, source: BinaryIO, max_bytes: int) -> tuple[int, int]:
        """Copy `source` into the storage a chunk at a time; returns (bytes, lines). `FileTooLarge` (and
        nothing kept) past `max_bytes`."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self._path(file_id)
        partial = final.with_name(f".{final.name}{PARTIAL}")
        size = lines = 0
        last = b"\n"
        try:
            with partial.open("wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(max_bytes)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    out.write(chunk)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return size, lines + (0 if last == b"\n" else 1)

    def lines(self, file_id: str) -> Iterator[bytes]:
        """The file's lines, read one at a time."""
        with self._path(file_id).open("rb") as f:
            yield from f

    def chunks(self, file_id: str) -> Iterator[bytes]:
        with self._path(file_id).open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def exists(self, file_id: str) -> bool:
        return self._path(file_id).exists()

    def delete(self, file_id: str) -> None:
        self._path(file_id).unlink(missing_ok=True)

    def leftovers(self, older_than_s: float) -> tuple[list[str], list[Path]]:
        """What the folder holds that was last written more than `older_than_s` ago: the ids of complete
        files (whose rows the caller looks up) and the partial files of uploads that never finished. Other
        names in the folder are not irq's and are left alone."""
        complete: list[str] = []
        partial: list[Path] = []
        if not self.root.is_dir():
            return complete, partial
        cutoff = time.time() - older_than_s
        for entry in os.scandir(self.root):
            name = entry.name
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:  # deleted meanwhile (a file's delete, an upload's rename)
                continue
            if is_file_id(name):
                complete.append(name)
            elif name.startswith(".") and name.endswith(PARTIAL) and is_file_id(name[1 : -len(PARTIAL)]):
                partial.append(Path(entry.path))
        return complete, partial
