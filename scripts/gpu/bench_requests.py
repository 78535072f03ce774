"""The request set of scripts/gpu/bench_engine.py, how each outcome is checked, and the summaries.

The requests (every prompt with the IR schema, plus the first N JSONSchemaBench schemas with a generic
prompt), what the engine is asked for each, one request's outcome with its document checked against the
schema, each mode's summary, and the markdown table (also used by scripts/gpu/report.py).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from inference.protocol import GenerateRequest

GENERIC_PROMPT = "Produce an example JSON document for this schema."
MODES = ("offline", "service_c1", "service_c64")


@dataclass
class Request:
    prompt: str
    schema: dict[str, Any]
    source: str  # "ir" or the schema file's name


@dataclass
class Outcome:
    """One request's end, whatever path it took."""

    status: str  # "ok", "rejected", "truncated" (no parseable JSON at max_tokens), "error"
    finish_reason: str = ""
    completion_tokens: int = 0
    latency_s: float | None = None
    ttft_ms: float | None = None
    backend: str = ""
    valid: bool | None = None  # None: not checked (no document, or the schema could not be checked)
    detail: str = ""
    prompt_tokens: int = 0
    engine_wait_ms: float | None = None  # the inference service's `engine_wait_ms`, where it reports one
    hollow: bool = False  # a document with nothing in it: `{}`, `[]`, "" or null


# The request set


def build_requests(prompts: Path, schemas: Path, n_schemas: int) -> list[Request]:
    from irq.ir_schema import ir_json_schema

    ir = ir_json_schema()
    lines = [json.loads(line) for line in prompts.read_text().splitlines() if line.strip()]
    requests = [Request(line["prompt"], ir, "ir") for line in lines]
    for path in sorted(schemas.glob("*.json"))[:n_schemas]:
        schema = json.loads(path.read_text())
        requests.append(Request(schema_prompt(schema), schema, path.name))
    return requests


def schema_prompt(schema: dict[str, Any]) -> str:
    about = " ".join(str(schema[k]) for k in ("title", "description") if isinstance(schema.get(k), str))
    return f"{GENERIC_PROMPT} {about}".strip()


def generate_request(request: Request, args: argparse.Namespace) -> GenerateRequest:
    """What the engine is asked for `request`, with the run's sampling parameters."""
    return GenerateRequest(
        prompt=request.prompt,
        schema=request.schema,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
    )


def spread(requests: list[Request], n: int) -> list[Request]:
    """`n` requests spread evenly over the set, so a subset has IR and benchmark schemas alike."""
    if n >= len(requests):
        return list(requests)
    return [requests[i * len(requests) // n] for i in range(n)]


# Checking documents


def check(document: Any, schema: dict[str, Any]) -> bool | None:
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        return bool(validator.is_valid(document))
    except Exception:  # an unresolvable $ref or a malformed schema: say so rather than guess
        return None


def hollow(document: Any) -> bool:
    """A document with nothing in it: valid under many schemas, useful under none."""
    return document in ({}, [], "", None)


def outcome_from_text(text: str, finish_reason: str, schema: dict[str, Any], **timing: Any) -> Outcome:
    try:
        document = json.loads(text)
    except ValueError:
        status = "truncated" if finish_reason == "length" else "error"
        return Outcome(status, finish_reason, detail="no JSON document", **timing)
    return Outcome("ok", finish_reason, valid=check(document, schema), hollow=hollow(document), **timing)


# Summaries


def percentile(values: list[float], q: float, digits: int = 3) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)


def summarize(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    done = [o for o in outcomes if o.status in ("ok", "truncated")]
    tokens = sum(o.completion_tokens for o in done)
    latencies = [o.latency_s for o in done if o.latency_s is not None]
    ttfts = [o.ttft_ms for o in done if o.ttft_ms is not None]
    return {
        "requests": len(outcomes),
        "accepted": sum(o.status != "rejected" for o in outcomes),
        "rejected": sum(o.status == "rejected" for o in outcomes),
        "errors": sum(o.status == "error" for o in outcomes),
        "schema_valid": sum(o.valid is True for o in outcomes),
        "schema_invalid": sum(o.valid is False for o in outcomes),
        "unchecked": sum(o.status == "ok" and o.valid is None for o in outcomes),
        "truncated": sum(o.finish_reason == "length" for o in outcomes),
        "valid_rate": round(sum(o.valid is True for o in outcomes) / max(1, len(done)), 3),
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(done) / wall_s, 2) if wall_s else None,
        "output_tokens_per_s": round(tokens / wall_s, 1) if wall_s else None,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "ttft_p50_ms": percentile(ttfts, 0.5, digits=1),
        "backends": dict(Counter(o.backend for o in outcomes if o.backend)),
        "details": dict(Counter(o.detail for o in outcomes if o.detail)),
    }


# Output


COLUMNS = [
    ("accepted", "accepted"),
    ("rejected", "rejected"),
    ("errors", "errors"),
    ("valid_rate", "schema-valid"),
    ("truncated", "truncated"),
    ("requests_per_s", "req/s"),
    ("output_tokens_per_s", "out tok/s"),
    ("latency_p50_s", "p50 s"),
    ("latency_p95_s", "p95 s"),
    ("ttft_p50_ms", "p50 ttft ms"),
]


def table(results: list[dict[str, Any]]) -> str:
    """One markdown row per backend and mode."""
    head = ["backend", "mode", "requests", *(title for _, title in COLUMNS), "backends used"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for result in results:
        for mode in MODES:
            summary = result.get("modes", {}).get(mode) or {}
            cells = [result.get("backend", "?"), mode, summary.get("requests", "—")]
            cells += [summary.get(key, "—") if summary.get(key) is not None else "—" for key, _ in COLUMNS]
            cells.append(", ".join(f"{k} {v}" for k, v in (summary.get("backends") or {}).items()) or "—")
            rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)
