"""The console sessions of the README and docs/api.md show what the API answers today: every job record they
print has exactly the fields (and nested fields) a job has now."""

from __future__ import annotations

import json
import re
from typing import Any

from tests import ROOT
from tests.support import Stack


def printed_jobs(page: str) -> list[dict[str, Any]]:
    """The JSON job records in a page's console sessions: one-line answers, and pretty ones."""
    text = (ROOT / page).read_text()
    jobs = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        decoder = json.JSONDecoder()
        at = 0
        while (start := block.find("{", at)) != -1:
            try:
                value, end = decoder.raw_decode(block, start)
            except ValueError:
                at = start + 1
                continue
            if isinstance(value, dict) and {"id", "status", "timings"} <= set(value):
                jobs.append(value)
            at = end
    return jobs


def shape(value: Any) -> Any:
    """The keys of a record, nested records' keys included (documents and lists are left out)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k != "result"}
    return None


def test_the_job_records_the_readme_prints_have_the_fields_a_job_has(api_only: Stack) -> None:
    documented = printed_jobs("README.md")
    assert len(documented) >= 2, "the README's curl session shows the queued job and the finished one"
    on_the_api_page = printed_jobs("docs/api.md")
    assert len(on_the_api_page) >= 1, "docs/api.md's CLI session shows a finished job"
    documented += on_the_api_page
    with api_only.client() as http:
        job = http.post("/v1/jobs", json={"prompt": "Create a function that returns the maximum of a list"})
        assert job.status_code == 202
        fetched = http.get(f"/v1/jobs/{job.json()['id']}").json()
    for record in documented:
        # `error` is null on a job that has none: compare the fields, and the error's own when shown.
        expected = shape(fetched)
        got = shape(record)
        if isinstance(record.get("error"), dict):
            expected["error"] = {"code": None, "message": None}
        assert got == expected
