"""Endpoint comparison: the same jobs through one deployment (one API, one `irq worker` serving every
endpoint compared) to each endpoint of the registry named (e.g. one model with the guidance, xgrammar and
auto backends), interleaved so that every endpoint runs under the same load; then per endpoint the
schema-valid rate, latency and time-to-first-token percentiles and tokens/s, with bootstrap confidence
intervals, and a Mann-Whitney U test of the latencies between every two endpoints. Writes compare.md,
compare.json and compare.png."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.harness import console, machine, percentile, run_jobs, stack
from irq.endpoints import Endpoint, read_registry

CONFIDENCE = 0.95


def requests(prompts: Path, schemas: Path | None, max_tokens: int | None = None) -> list[dict[str, Any]]:
    """The prompts (JSONL with a `prompt` each) with the default IR schema, then one job per schema file;
    every job with `max_tokens` when given (else the API's default)."""
    bodies: list[dict[str, Any]] = [
        {"prompt": json.loads(line)["prompt"]} for line in prompts.read_text().splitlines() if line.strip()
    ]
    for path in sorted(schemas.glob("*.json")) if schemas else []:
        bodies.append(
            {
                "prompt": f"Produce a realistic JSON document for the schema '{path.stem}'.",
                "schema": json.loads(path.read_text()),
            }
        )
    if max_tokens is not None:
        bodies = [{**body, "max_tokens": max_tokens} for body in bodies]
    return bodies


def _median_ci(values: list[float]) -> tuple[float | None, float | None]:
    if len(values) < 2 or len(set(values)) < 2:
        return (values[0], values[0]) if values else (None, None)
    ci = stats.bootstrap(
        (np.array(values),), np.median, confidence_level=CONFIDENCE, random_state=0
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _rate_ci(successes: int, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def summarize(name: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = [j for j in jobs if j["status"] != "refused"]
    valid = [j for j in accepted if j["status"] == "succeeded"]
    total = [j["timings"]["total_ms"] for j in valid]
    ttft = [j["timings"]["ttft_ms"] for j in valid if j["timings"]["ttft_ms"] is not None]
    tps = [j["timings"]["tokens_per_s"] for j in valid if j["timings"]["tokens_per_s"] is not None]
    backends = sorted({j.get("backend") or "" for j in valid})
    return {
        "name": name,
        "jobs": len(jobs),
        "refused_at_submit": len(jobs) - len(accepted),
        "schema_valid": len(valid),
        "schema_valid_rate": len(valid) / len(accepted) if accepted else None,
        "schema_valid_rate_ci": _rate_ci(len(valid), len(accepted)),
        "total_ms": {"p50": percentile(total, 50), "p95": percentile(total, 95), "p50_ci": _median_ci(total)},
        "ttft_ms": {"p50": percentile(ttft, 50), "p95": percentile(ttft, 95), "p50_ci": _median_ci(ttft)},
        "tokens_per_s": {"p50": percentile(tps, 50), "p50_ci": _median_ci(tps)},
        "backend_reported": backends,
        "_total": total,
    }


def _fmt(value: float | None, ci: tuple[float | None, float | None] | None = None, digits: int = 0) -> str:
    if value is None or value != value:
        return "—"
    text = f"{value:.{digits}f}"
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def markdown(summaries: list[dict[str, Any]], tests: list[dict[str, Any]]) -> str:
    lines = [
        f"| endpoint | jobs | refused | schema-valid rate [{CONFIDENCE:.0%} CI] | total p50 ms [CI] "
        "| total p95 ms | TTFT p50 ms [CI] | tokens/s p50 [CI] | backend reported |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        lines.append(
            f"| {s['name']} | {s['jobs']} | {s['refused_at_submit']} "
            f"| {_fmt(s['schema_valid_rate'], s['schema_valid_rate_ci'], 3)} "
            f"| {_fmt(s['total_ms']['p50'], s['total_ms']['p50_ci'])} | {_fmt(s['total_ms']['p95'])} "
            f"| {_fmt(s['ttft_ms']['p50'], s['ttft_ms']['p50_ci'])} "
            f"| {_fmt(s['tokens_per_s']['p50'], s['tokens_per_s']['p50_ci'], 1)} "
            f"| {', '.join(s['backend_reported'])} |"
        )
    if tests:
        lines += ["", "| latency (total) | Mann-Whitney U | p-value |", "| --- | --- | --- |"]
        lines += [f"| {t['a']} vs {t['b']} | {t['u']:.1f} | {t['p']:.3g} |" for t in tests]
    return "\n".join(lines) + "\n"


def run(
    registry_path: Path, names: list[str], bodies: list[dict[str, Any]], concurrency: int, out_dir: Path
) -> dict[str, Any]:
    endpoints = read_registry(registry_path).selected(names)
    routes = {(e.model, e.backend) for e in endpoints}
    if len(routes) < len(endpoints):
        raise SystemExit("endpoints of the same model and backend are replicas: compare distinct ones")
    for e in endpoints:
        _warm_up(e)
    console.print(
        f"{len(bodies)} jobs to each of {', '.join(e.name for e in endpoints)}, interleaved, "
        f"{concurrency} at a time, through one API and one worker per endpoint"
    )
    jobs = [{**body, "model": e.model, "backend": e.backend} for body in bodies for e in endpoints]
    with stack(latency_s=0.0, slots=1, endpoints_file=registry_path, endpoints=names) as bench:
        finished, wall_s = run_jobs(bench, jobs, concurrency)
    summaries = [
        summarize(e.name, [f.job for i, f in enumerate(finished) if i % len(endpoints) == k])
        for k, e in enumerate(endpoints)
    ]
    tests = []
    for a, b in itertools.combinations(summaries, 2):
        if a["_total"] and b["_total"]:
            result = stats.mannwhitneyu(a["_total"], b["_total"], alternative="two-sided")
            tests.append(
                {"a": a["name"], "b": b["name"], "u": float(result.statistic), "p": float(result.pvalue)}
            )
    table = markdown(summaries, tests)
    console.print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(table)
    _plot(summaries, out_dir / "compare.png")
    result = {
        "machine": machine(),
        "wall_s": wall_s,
        "endpoints": [e.model_dump(exclude={"headers_env"}) for e in endpoints],
        "summaries": [{k: v for k, v in s.items() if k != "_total"} for s in summaries],
        "mann_whitney": tests,
    }
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out_dir / 'compare.md'}, compare.json and compare.png")
    return result


def _warm_up(endpoint: Endpoint) -> None:
    """Load the endpoint's model first (minutes on a cold GPU), so that no endpoint is timed with it."""
    import httpx

    from irq.settings import derive_health_url

    warmup = derive_health_url(endpoint.url).removesuffix("/health") + "/warmup"
    headers = endpoint.headers()
    try:
        httpx.post(warmup, headers=headers, timeout=900).raise_for_status()
    except httpx.HTTPError as exc:
        console.print(f"  no warm-up at {warmup} ({exc}); the first jobs may include a cold start")


def _plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    shown = [s for s in summaries if s["_total"]]
    ax.boxplot([s["_total"] for s in shown], tick_labels=[s["name"] for s in shown], showfliers=True)
    ax.set_ylabel("job total (ms)")
    ax.set_title("Latency by endpoint")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
