"""Real-world schemas through the whole pipeline: a generic prompt per JSON Schema of a folder (`--schemas`:
the `jsonschemabench/` of a folder holding prompts.jsonl and jsonschemabench/, whose file names start with
their category) and the IR prompts with the default schema, through REST → Redis → worker → inference service
→ store. Per category: jobs, accepted at submit, succeeded and schema-valid (each document checked here again
with `jsonschema` against the schema it was submitted with), hollow successes (valid, but no content where the
schema allows some: `irq.bounding.hollow`; not counted as schema-valid), truncated (`output_truncated`), other
failures (by code: `hollow_output`, `grammar_error`, `prompt_too_long`, …), reported successes that fail that
check, and jobs still not terminal at the deadline. Writes schemas.md and schemas.json.

    irq bench schemas [--schemas DIR] [--prompts FILE] [--limit N | --per-category N] [--max-tokens 512]
                      [--inference-url URL] [--deadline-s S] [--out DIR]

Without `--inference-url` it starts the inference service with the local engine (SmolLM2-135M on the
CPU, one request at a time, so the worker runs two jobs at a time as `irq dev` does).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jsonschema

from bench.harness import console, machine, run_jobs, stack
from irq.bounding import is_hollow
from irq.ir_schema import ir_json_schema
from irq.store.models import TERMINAL

IR = "IR (default schema)"
GENERIC_PROMPT = "Produce a realistic JSON document for the schema '{name}'."


def requests(
    schemas: Path, prompts: Path, limit: int | None, max_tokens: int, per_category: int | None = None
) -> list[dict[str, Any]]:
    """One job per schema file (the first `limit` in name order, or the first `per_category` of each
    category), then one per IR prompt; each with its category and the schema its document must match."""
    jobs: list[dict[str, Any]] = []
    taken: Counter[str] = Counter()
    for path in sorted(schemas.glob("*.json"))[:limit]:
        category = path.stem.split("__", 1)[0]
        if per_category is not None and taken[category] >= per_category:
            continue
        taken[category] += 1
        schema = json.loads(path.read_text())
        body = {"prompt": GENERIC_PROMPT.format(name=path.stem), "schema": schema, "max_tokens": max_tokens}
        jobs.append({"category": category, "body": body, "schema": schema})
    for line in prompts.read_text().splitlines():
        if line.strip():
            body = {"prompt": json.loads(line)["prompt"], "max_tokens": max_tokens}
            jobs.append({"category": IR, "body": body, "schema": ir_json_schema()})
    return jobs


def _valid(document: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(document, schema)
    except Exception:  # a document that does not match, or a schema jsonschema cannot use: never valid
        return False
    return True


def tally(jobs: list[dict[str, Any]], finished: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category (and "all"), what became of its jobs."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    failures: dict[str, Counter[str]] = defaultdict(Counter)
    cuts: dict[str, Counter[str]] = defaultdict(Counter)
    for job, done in zip(jobs, finished, strict=True):
        for name in (job["category"], "all"):
            row = counts[name]
            row["jobs"] += 1
            status = done["status"]
            if status == "refused":
                row["refused"] += 1
                continue
            row["accepted"] += 1
            if status not in TERMINAL:
                row["not_terminal"] += 1
            elif status == "succeeded":
                if not _valid(done["result"], job["schema"]):
                    row["invalid_successes"] += 1
                elif is_hollow(done["result"], job["schema"]):
                    row["hollow_successes"] += 1
                else:
                    row["schema_valid"] += 1
            elif (done.get("error") or {}).get("code") == "output_truncated":
                row["truncated"] += 1  # cut at max_tokens (`length`) or stopped in a loop (`repetition`)
                cuts[name][done.get("finish_reason") or "unknown"] += 1
            else:
                failures[name][(done.get("error") or {}).get("code") or status] += 1
            if done.get("bounded"):
                row["bounded_retries"] += 1
    return {
        name: {**row, "failures": dict(failures[name]), "truncated_by": dict(cuts[name])}
        for name, row in counts.items()
    }


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        "| category | jobs | accepted | schema-valid | of accepted | truncated | other failures "
        "| hollow successes | invalid successes | not terminal | took a bounded retry |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name in sorted(rows, key=lambda n: (n == "all", n)):
        r = rows[name]
        rate = f"{r.get('schema_valid', 0) / r['accepted']:.1%}" if r.get("accepted") else "—"
        failures = ", ".join(f"{code} {n}" for code, n in sorted(r["failures"].items())) or "0"
        by = ", ".join(f"{reason} {n}" for reason, n in sorted(r.get("truncated_by", {}).items()))
        truncated = f"{r.get('truncated', 0)}" + (f" ({by})" if by else "")
        lines.append(
            f"| {name} | {r['jobs']} | {r.get('accepted', 0)} | {r.get('schema_valid', 0)} | {rate} "
            f"| {truncated} | {failures} | {r.get('hollow_successes', 0)} "
            f"| {r.get('invalid_successes', 0)} | {r.get('not_terminal', 0)} "
            f"| {r.get('bounded_retries', 0)} |"
        )
    return head + "\n".join(lines) + "\n"


def run(
    schemas: Path,
    prompts: Path,
    out: Path,
    *,
    limit: int | None = None,
    per_category: int | None = None,
    max_tokens: int = 512,
    inference_url: str | None = None,
    deadline_s: float = 3600.0,
) -> dict[str, Any]:
    jobs = requests(schemas, prompts, limit, max_tokens, per_category)
    env = {"IRQ_WORKER_CONCURRENCY": "64" if inference_url else "2"}
    if inference_url is None:
        env["IRQ_ENGINE"] = "local"
    with stack(latency_s=0, slots=1, env=env, inference_url=inference_url) as bench:
        if inference_url is None:
            bench.warm_up()
        finished, wall = run_jobs(bench, [job["body"] for job in jobs], 64, deadline_s=deadline_s)
    rows = tally(jobs, [f.job for f in finished])
    result = {
        "scenario": "schemas",
        "machine": machine(),
        "inference": inference_url or "local engine",
        "max_tokens": max_tokens,
        "schemas": str(schemas),
        "limit": limit,
        "per_category": per_category,
        "wall_s": wall,
        "categories": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "schemas.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows)
    (out / "schemas.md").write_text(table)
    console.print(table)
    return result
