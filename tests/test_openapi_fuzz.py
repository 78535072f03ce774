"""Schemathesis against the API's own OpenAPI document, over real HTTP: generated valid and invalid
requests to every operation must get no 5xx and no answer that the document does not allow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, start_stack, stop_stack

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def fuzzed_api(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    # Long-polls and chat completions (no worker runs their jobs) end after 1 s here, so that no answer
    # waits longer than schemathesis's time limit.
    env = {"IRQ_MAX_WAIT_S": "1", "IRQ_CHAT_WAIT_S": "1"}
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env=env)
    yield stack
    stop_stack(stack)


def test_the_api_keeps_to_its_openapi_document(fuzzed_api: Stack, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", fuzzed_api.api + "/openapi.json",
            "--header", f"Authorization: Bearer {fuzzed_api.key}",
            "--checks", "all",
            "--max-examples", "25",
            # A schema the OpenAPI document allows (any object) may still be refused 422 by the JSON Schema
            # meta-check or by llguidance: that is the contract, so "valid data is accepted" is not checked.
            "--exclude-checks", "positive_data_acceptance",
            "--seed", "1",
            "--generation-database", "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=850,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
