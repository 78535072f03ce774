"""A schema-check process (`python -m irq.schema_check`), started and killed by the API's `CheckPool`.

It answers one line per line: the schema's canonical JSON in, its problem (`null` or `[code, message]`) out.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from irq.error_codes import ErrorCode
from irq.schema_check.verdict import Problem, byte_tokenizer, capped, problem

ORPHAN_CHECK_S = 1.0


def _exit_when_orphaned() -> None:
    """End this process once the API process that started it is gone, even in the middle of a check."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def answer(canonical: str) -> Problem | None:
    try:
        return problem(canonical, overlap=True)
    except Exception as exc:  # a fault of llguidance or jsonschema on this schema: refuse it, keep serving
        message = f"checking the schema failed: {type(exc).__name__}: {exc}"
        return ErrorCode.schema_unsupported, capped(message)


def main() -> None:
    _exit_when_orphaned()
    # The answers get their own copy of stdout; whatever a library prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    byte_tokenizer()
    answers.write(b"ready\n")
    for line in sys.stdin.buffer:
        answers.write(json.dumps(answer(line.decode())).encode() + b"\n")


if __name__ == "__main__":
    main()
