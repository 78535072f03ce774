"""Four paths on the same requests: vLLM offline, irq's inference service, vLLM's OpenAI server, the pipeline.

The request sets (`ir`: the 30 IR prompts with the default IR schema; `mixed`: those and the first 50
jsonschemabench schemas in name order with a generic prompt; each cycled to `-n` requests), the same
sampling for every path, and per path one run of the set after `--warmup` requests of it sent the same way
(untimed). Each run writes PATH-SET-LAYOUT.json (`--layout`: how the host's cores were shared, a label
run-paths.sh gives); `report` gathers them into one markdown table, the ratios within each layout, and the
cores each process used during each run (the timelines of scripts/gpu/cpu_sample.py in DIR/cpu/).
scripts/gpu/run-paths.sh starts the engines and the stack and calls this, one subcommand per path:

    python3 -m scripts.gpu.paths_bench offline  --sets ir mixed --out-dir DIR   (starts a vllm.LLM itself)
    python3 -m scripts.gpu.paths_bench service  --url http://127.0.0.1:8101 --sets ir mixed --out-dir DIR
    python3 -m scripts.gpu.paths_bench server   --url http://127.0.0.1:8201 --sets ir mixed --out-dir DIR
    python3 -m scripts.gpu.paths_bench pipeline --url http://127.0.0.1:8000 --key KEY --sets … --out-dir DIR
    python3 -m scripts.gpu.paths_bench report   --out-dir DIR

What every engine gets is the worker's: the schema as `irq.schema_check.options.engine_schema` writes it
(the deployment's llguidance options in `x-guidance`), the chat-templated prompt of `irq.prompting`,
`max_tokens`, `temperature`, `top_p`. The pipeline is sent the user's schema (the worker adds the same
options) and otherwise the product's defaults (the bounded schema where the budget asks for it, a bounded
retry after a cut), or with `--plain` `retry_truncated: false`: the user's schema alone, no job generated
twice. The clients run in `--procs` processes (each with its share of `--concurrency` in flight), and each
reports the CPU it used.

Every path is counted the same way: a request succeeded when its document parsed, passed `jsonschema`
against the user's schema (checked here again for the pipeline's jobs) and is not hollow (`{}`, `[]`);
`valid/s` is those documents over the run's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a plain script: find `scripts.gpu` in ROOT
    sys.path.append(str(ROOT))

from bench.clients import RETRIES  # noqa: E402
from scripts.gpu import bench_paths, cpu_sample, pipeline_bench  # noqa: E402
from scripts.gpu.bench_requests import (  # noqa: E402
    Outcome,
    Request,
    build_requests,
    check,
    hollow,
    outcome_from_text,
    percentile,
    summarize,
)

PATHS = ("offline", "service", "server", "pipeline")
PATH_TITLES = {
    "offline": "vLLM offline `LLM.generate`",
    "service": "irq inference service alone (HTTP)",
    "server": "vLLM OpenAI server (HTTP)",
    "pipeline": "irq pipeline (REST → Redis → worker → service → SQLite)",
}
SETS = ("ir", "mixed")
TERMINAL = ("succeeded", "failed", "cancelled")


# The request sets


def request_set(args: argparse.Namespace, name: str) -> list[Request]:
    """The set `name` cycled to `args.n` requests, each with the user's schema (as the pipeline is sent)."""
    base = build_requests(args.prompts, args.schemas, 0 if name == "ir" else args.n_schemas)
    return [base[i % len(base)] for i in range(args.n)]


def for_engine(requests: list[Request]) -> list[Request]:
    """The requests as the worker hands them to an engine: the schema with the deployment's llguidance
    options (jsonschema ignores the `x-guidance` key, so the documents are checked against the same
    schema)."""
    from irq.schema_check.options import GuidanceOptions, engine_schema
    from irq.settings import get_settings

    options = GuidanceOptions.of(get_settings())
    return [Request(r.prompt, engine_schema(r.schema, options), r.source) for r in requests]


def job_body(request: Request, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    if args.plain:
        body["retry_truncated"] = False
    if request.source != "ir":  # the IR prompts: the API's default schema, the IR schema
        body["schema"] = request.schema
    return body


# The HTTP paths: one request each


async def post_service(http: httpx.AsyncClient, request: Request, args: argparse.Namespace) -> Outcome:
    return await bench_paths.post(http, request, args)


async def post_server(http: httpx.AsyncClient, request: Request, args: argparse.Namespace) -> Outcome:
    """A chat completion from vLLM's OpenAI server: irq's chat messages, the schema as `response_format`."""
    from irq import prompting

    body = {
        "model": args.served_model,
        "messages": prompting.messages(request.prompt, request.schema),
        "max_completion_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "document", "schema": request.schema},
        },
    }
    started = time.perf_counter()
    try:
        response = await http.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Outcome("error", detail=type(exc).__name__)
    latency = time.perf_counter() - started
    if response.status_code != 200:
        return Outcome(
            "error", latency_s=latency, detail=f"http_{response.status_code}: {response.text[:80]}"
        )
    answer = response.json()
    choice, usage = answer["choices"][0], answer.get("usage") or {}
    outcome = outcome_from_text(
        choice["message"].get("content") or "",
        str(choice.get("finish_reason")),
        request.schema,
        latency_s=latency,
    )
    outcome.completion_tokens = usage.get("completion_tokens") or 0
    outcome.prompt_tokens = usage.get("prompt_tokens") or 0
    return outcome


# Several client processes, started together, each timing itself and its CPU


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client(job: tuple[str, list[Any], int, float, argparse.Namespace]) -> dict[str, Any]:
    """One client process's share: `items` (requests, or job bodies) from `start_at` (time.time()) on."""
    path, items, concurrency, start_at, args = job
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = cpu_s(), time.time()
    try:
        if path == "pipeline":
            jobs, submit_s = asyncio.run(
                pipeline_bench.batch_and_wait(args.url, args.key, items)
                if args.submit == "batch"
                else pipeline_bench.submit_and_wait(args.url, args.key, items, concurrency)
            )
            results: list[Any] = jobs
        else:
            post = post_service if path == "service" else post_server
            results, submit_s = (
                asyncio.run(bench_paths.post_all(post, args.url, items, concurrency, args)),
                0.0,
            )
    except Exception as exc:  # as text: some httpx errors cannot be pickled back to the parent
        raise RuntimeError(f"{path} client: {type(exc).__name__}: {exc}") from None
    end = time.time()
    cpu = cpu_s() - cpu0
    return {"results": results, "start": t0, "end": end, "cpu_s": cpu, "cpu_share": cpu / max(end - t0, 1e-9),
            "submit_s": submit_s, "retries": dict(RETRIES)}  # fmt: skip


def run_clients(path: str, items: list[Any], args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """`items` over `args.procs` processes (item i to process i % procs, each with its share of the
    concurrency); the results in the order of `items`, and the clients' timing and CPU."""
    procs = max(1, min(args.procs, len(items)))
    shares = [items[p::procs] for p in range(procs)]
    per = max(1, args.concurrency // procs)
    start_at = time.time() + 1.0  # every process has started and imported by then
    context = multiprocessing.get_context("fork")
    with context.Pool(procs) as pool:
        parts = pool.map(client, [(path, share, per, start_at, args) for share in shares])
    results: list[Any] = [None] * len(items)
    for p, part in enumerate(parts):
        results[p::procs] = part["results"]
    wall = max(part["end"] for part in parts) - start_at
    load = {
        "window": [round(start_at, 2), round(start_at + wall, 2)],  # time.time(), for the CPU timelines
        "procs": procs,
        "in_flight_per_proc": per,
        "wall_s": round(wall, 2),
        "cpu_s": [round(part["cpu_s"], 2) for part in parts],
        "cpu_share_max": round(max(part["cpu_share"] for part in parts), 3),  # of one core, per process
        "submit_s_max": round(max(part["submit_s"] for part in parts), 2),
        "retries": count_sum(part["retries"] for part in parts),
    }
    return results, load


# Summaries: one row per path and set


def succeeded(outcome: Outcome) -> bool:
    """A document that parsed, did not fail `jsonschema` and is not hollow."""
    return outcome.status == "ok" and outcome.valid is not False and not outcome.hollow


def row(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    latencies = [o.latency_s for o in outcomes if o.latency_s is not None]
    tokens = sum(o.completion_tokens for o in outcomes)
    prompt = [o.prompt_tokens for o in outcomes if o.prompt_tokens]
    waits = [o.engine_wait_ms for o in outcomes if o.engine_wait_ms is not None]
    return {
        "requests": len(outcomes),
        "succeeded": sum(succeeded(o) for o in outcomes),
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(outcomes) / wall_s, 2),
        "valid_per_s": round(sum(succeeded(o) for o in outcomes) / wall_s, 2),
        "hollow": sum(o.hollow for o in outcomes),
        "output_tokens_per_s": round(tokens / wall_s, 1),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "completion_tokens": tokens,
        "prompt_tokens_mean": round(statistics.mean(prompt), 1) if prompt else None,
        "engine_wait_mean_ms": round(statistics.mean(waits), 1) if waits else None,
        "finish_reasons": count(o.finish_reason or o.status for o in outcomes),
        "detail": summarize(outcomes, wall_s),
    }


def count_sum(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def job_outcome(job: dict[str, Any], schema: dict[str, Any]) -> Outcome:
    """A job as an outcome; a succeeded job's document checked again against the user's `schema`."""
    t, usage = job["timings"], job["usage"]
    ok = job["status"] == "succeeded"
    document = job.get("result")
    failed = "truncated" if job.get("finish_reason") == "length" else "error"
    return Outcome(
        "ok" if ok else ("rejected" if job["status"] == "refused" else failed),
        str(job.get("finish_reason") or ""),
        usage.get("completion_tokens") or 0,
        t["total_ms"] / 1000 if t.get("total_ms") is not None else None,
        t.get("ttft_ms"),
        str(job.get("backend") or ""),
        valid=check(document, schema) if ok else None,
        detail="" if ok else str((job.get("error") or {}).get("code", "")),
        hollow=ok and hollow(document),
        prompt_tokens=usage.get("prompt_tokens") or 0,
        engine_wait_ms=t.get("engine_wait_ms"),
    )


def breakdown(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean per-job timings of the jobs that succeeded, against their mean total.

    In the job record `ttft_ms` and `generation_ms` both count from the engine's first step on the job
    (inference/engines/vllm.py): the time to first token is part of the generation time, so the parts
    that add up are the earlier attempts (created → the last enqueue) + queue wait + engine wait +
    generation; the sum with ttft added is given as asked.
    """
    done = [j["timings"] for j in jobs if j["status"] == "succeeded"]
    fields = ("earlier_attempts_ms", "queue_wait_ms", "engine_wait_ms", "ttft_ms", "generation_ms")
    fields += ("total_ms",)
    means: dict[str, Any] = {}
    for name in fields:
        values = [t[name] for t in done if t.get(name) is not None]
        means[name] = round(statistics.mean(values), 1) if values else None
    result: dict[str, Any] = {"jobs": len(done), "mean_ms": means}
    if all(means[f] is not None for f in fields) and means["total_ms"]:
        parts = means["earlier_attempts_ms"] + means["queue_wait_ms"] + means["engine_wait_ms"]
        parts += means["generation_ms"]
        result["earlier+queue+engine_wait+generation_ms"] = round(parts, 1)
        result["of_total"] = round(parts / means["total_ms"], 3)
        result["earlier+queue+engine_wait+ttft+generation_ms"] = round(parts + means["ttft_ms"], 1)
        result["with_ttft_of_total"] = round((parts + means["ttft_ms"]) / means["total_ms"], 3)
        result["unaccounted_ms"] = round(means["total_ms"] - parts, 1)
    return result


# The paths


def run_offline(args: argparse.Namespace) -> None:
    llm, load_s = bench_paths.start_offline(args)
    print(f"offline engine started in {load_s:.1f} s", flush=True)
    for name in args.sets:
        requests = for_engine(request_set(args, name))
        outcomes, wall_s = bench_paths.offline_batch(llm, args, requests, warmup=args.warmup)
        end = time.time()
        window = [round(end - wall_s, 2), round(end, 2)]
        write(
            args,
            "offline",
            name,
            {**row(outcomes, wall_s), "engine_load_s": round(load_s, 1), "window": window},
        )


def run_http(args: argparse.Namespace, path: str) -> None:
    for name in args.sets:
        requests = for_engine(request_set(args, name))
        run_clients(path, requests[: args.warmup], args)
        outcomes, load = run_clients(path, requests, args)
        write(
            args,
            path,
            name,
            {**row(outcomes, load["wall_s"]), "load_generator": load, "window": load["window"]},
        )


def run_pipeline(args: argparse.Namespace) -> None:
    for name in args.sets:
        requests = request_set(args, name)
        bodies = [job_body(r, args) for r in requests]
        run_clients("pipeline", bodies[: args.warmup], args)
        jobs, load = run_clients("pipeline", bodies, args)
        makespan = pipeline_bench.makespan_s(jobs)
        result = {
            **row([job_outcome(j, r.schema) for j, r in zip(jobs, requests, strict=True)], makespan),
            "bounded": sum(bool(j.get("bounded")) for j in jobs),
            "makespan_from": "the first job's created_at to the last one's finished_at (the store's clock)",
            "load_generator": load,
            "window": load["window"],
            "failed": count((j.get("error") or {}).get("code") for j in jobs if j["status"] != "succeeded"),
            "attempts": count(j.get("attempts") for j in jobs),
            "breakdown": breakdown(jobs),
            "pipeline_bench": pipeline_bench.summarize(jobs, load["submit_s_max"]),
        }
        write(args, "pipeline", name, result)


def write(args: argparse.Namespace, path: str, name: str, result: dict[str, Any]) -> None:
    result = {"path": path, "set": name, "layout": args.layout, "settings": settings(args), **result}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{path}-{name}-{args.layout}.json").write_text(json.dumps(result, indent=2))
    load = result.get("load_generator") or {}
    r = result
    print(
        f"{path} {name} ({args.layout}): {r['succeeded']}/{r['requests']} succeeded, "
        f"{r['requests_per_s']} req/s, "
        f"{r['output_tokens_per_s']} tok/s, p50 {r['latency_p50_s']} s, p95 {r['latency_p95_s']} s"
        + (f", client CPU max {load['cpu_share_max']:.0%} of a core x{load['procs']}" if load else ""),
        flush=True,
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    names = ("n", "n_schemas", "max_tokens", "temperature", "top_p", "concurrency", "warmup", "procs",
             "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "max_model_len",
             "gpu_memory_utilization", "attention_backend", "backend")  # fmt: skip
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


# The report: one table, the ratios


def report(args: argparse.Namespace) -> None:
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in sorted(args.out_dir.glob("*-*.json")):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and data.get("path") in PATHS:
            results[(data.get("layout", "shared"), data["path"], data["set"])] = data
    layouts = sorted({k[0] for k in results}, key=lambda name: (name != "shared", name))
    head = ["path", "layout", "set", "requests", "valid", "hollow", "req/s", "valid/s", "output tok/s",
            "p50 s", "p95 s", "client CPU"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for layout in layouts:
        for name in SETS:
            for path in PATHS:
                r = results.get((layout, path, name))
                if r is None:
                    continue
                load = r.get("load_generator")
                cpu = f"{load['cpu_share_max']:.0%} ×{load['procs']}" if load else "—"
                cells = [PATH_TITLES[path], layout, name, r["requests"], r["succeeded"], r.get("hollow"),
                         r["requests_per_s"], r.get("valid_per_s"), r["output_tokens_per_s"],
                         r["latency_p50_s"], r["latency_p95_s"], cpu]  # fmt: skip
                lines.append("| " + " | ".join("—" if c is None else str(c) for c in cells) + " |")
    ratios: dict[str, Any] = {}
    for layout in layouts:
        for name in SETS:
            pipe = results.get((layout, "pipeline", name))
            pairs = [(pipe, (layout, other, name)) for other in ("server", "service", "offline")]
            pairs.append((results.get((layout, "service", name)), (layout, "server", name)))
            # and against the engine's paths of the same session in its layout, and on shared cores
            for base in dict.fromkeys((engine_layout(layout), "shared")):
                if base != layout:
                    pairs += [(pipe, (base, other, name)) for other in ("server", "service")]
            for top, key in pairs:
                base = results.get(key)
                if top and base:
                    label = f"{name}: {top['path']} ({layout}) / {base['path']} ({key[0]})"
                    ratios[label] = {
                        "req/s": round(top["requests_per_s"] / base["requests_per_s"], 3),
                        "valid/s": ratio(top.get("valid_per_s"), base.get("valid_per_s")),
                        "output tok/s": round(top["output_tokens_per_s"] / base["output_tokens_per_s"], 3),
                    }
    lines += ["", "| ratio | req/s | valid/s | output tok/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['req/s']} | {v['valid/s']} | {v['output tok/s']} |" for k, v in ratios.items()]
    lines += repeated(results, "requests_per_s", "req/s")
    lines += repeated(results, "valid_per_s", "valid documents/s")
    lines += goal(results)
    lines += cpu_table(args.out_dir, results)
    for (layout, path, name), r in results.items():
        if path == "pipeline" and r.get("breakdown"):
            lines += ["", f"pipeline {name} ({layout}), mean per succeeded job: {json.dumps(r['breakdown'])}"]
    text = "\n".join(lines)
    print(text)
    (args.out_dir / "paths.md").write_text(text + "\n")
    summary = {"results": {"-".join(k): r for k, r in results.items()}, "ratios": ratios}
    (args.out_dir / "paths.json").write_text(json.dumps(summary, indent=2))


def engine_layout(layout: str) -> str:
    """The layout the service and the server share with a pipeline layout: without the pipeline's own
    parts (`-Nw` worker processes, `-Na` API processes, `-Ne` engines, `-batch`, `-plain`), e.g. shared-r1
    for shared-4a-3e-r1."""
    return re.sub(r"-([0-9]+[wae]|batch|plain)(?=-|$)", "", layout)


def goal(results: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    """Each set's paths side by side, as means over their repetitions: req/s, valid documents/s, valid of
    accepted, valid/s against vLLM's server (the goal: the pipeline's at least 1.5 times), and for the
    pipeline the share of the mean total time that its per-job breakdown accounts for."""
    rate, valid = repetitions(results, "requests_per_s"), repetitions(results, "valid_per_s")
    share: dict[tuple[str, str, str], list[float]] = {}
    accounted: dict[tuple[str, str, str], list[float]] = {}
    for (layout, path, name), r in results.items():
        key = (re.sub(r"-r[0-9]+$", "", layout), path, name)
        if key in rate and r["requests"]:
            share.setdefault(key, []).append(r["succeeded"] / r["requests"])
        if (r.get("breakdown") or {}).get("of_total") is not None:
            accounted.setdefault(key, []).append(r["breakdown"]["of_total"])
    lines = ["", "Goal: valid documents per second against vLLM's server (means over the repetitions)", "",
             "| set | path | layout | runs | req/s | valid/s | valid of requests | valid/s ÷ server "
             "| breakdown ÷ total |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in SETS:
        for (layout, path, set_name), values in sorted(valid.items(), key=lambda kv: (kv[0][2], kv[0][1])):
            if set_name != name:
                continue
            server = valid.get((engine_layout(layout), "server", name))
            mean = statistics.mean(values)
            parts = accounted.get((layout, path, set_name))
            against = ratio(mean, statistics.mean(server)) if server else None
            cells = [name, path, layout, len(values), f"{statistics.mean(rate[(layout, path, name)]):.2f}",
                     f"{mean:.2f}", f"{statistics.mean(share[(layout, path, name)]):.1%}",
                     "—" if against is None else f"{against:.2f}",
                     f"{statistics.mean(parts):.3f}" if parts else "—"]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines if len(lines) > 5 else []


def ratio(top: float | None, base: float | None) -> float | None:
    return round(top / base, 3) if top is not None and base else None


def repetitions(
    results: dict[tuple[str, str, str], dict[str, Any]], metric: str
) -> dict[tuple[str, str, str], list[float]]:
    """Each path's `metric` over its repetitions (labels LAYOUT-r1 …), by (layout less -rN, path, set)."""
    runs: dict[tuple[str, str, str], list[float]] = {}
    for (layout, path, name), r in results.items():
        base = re.sub(r"-r[0-9]+$", "", layout)
        if base != layout and r.get(metric) is not None:
            runs.setdefault((base, path, name), []).append(r[metric])
    return runs


def repeated(results: dict[tuple[str, str, str], dict[str, Any]], metric: str, title: str) -> list[str]:
    """Over the repetitions of each path (labels LAYOUT-r1 … from REPEAT=N): the runs, the metric's mean,
    min and max; then the pipeline's ratios of the means, with the lowest and highest of any two runs."""
    runs = repetitions(results, metric)
    if not runs:
        return []
    lines = ["", f"Repeated runs ({title})", "", "| path | layout | set | runs | mean | min | max |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for (base, path, name), values in sorted(runs.items()):
        mean = statistics.mean(values)
        lines.append(
            f"| {path} | {base} | {name} | {len(values)} | {mean:.2f} | {min(values)} | {max(values)} |"
        )
    lines += ["", "| ratio of the means | mean | lowest | highest |", "| --- | --- | --- | --- |"]
    for (base, path, name), pipe in sorted(runs.items()):
        if path != "pipeline":
            continue
        for other in ("server", "service"):
            engine = engine_layout(base)
            base_runs = runs.get((engine, other, name))
            if base_runs:
                of_means = statistics.mean(pipe) / statistics.mean(base_runs)
                low, high = min(pipe) / max(base_runs), max(pipe) / min(base_runs)
                label = f"pipeline ({base}) / {other} ({engine})"
                lines.append(f"| {name}: {label} | {of_means:.3f} | {low:.3f} | {high:.3f} |")
    return lines


CPU_ROLES = (
    "engine core",
    "irq service",
    "vLLM server",
    "irq api",
    "irq worker",
    "redis",
    "clients",
    "other",
)


def cpu_table(out_dir: Path, results: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    """Cores used during each run (mean over its 1-s samples; max in brackets), by role; the run's
    result gets the same figures under `cpu_cores`."""
    timeline = [
        s for f in sorted((out_dir / "cpu").glob("*.json")) for s in json.loads(f.read_text())["timeline"]
    ]
    if not timeline:
        return []
    head = ["path", "layout", "set", *CPU_ROLES, "machine busy"]
    lines = ["", "Cores used during each run: mean (max) of 1-s samples (scripts/gpu/cpu_sample.py)", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]  # fmt: skip
    order = {p: i for i, p in enumerate(PATHS)}
    for (layout, path, name), r in sorted(
        results.items(), key=lambda kv: (kv[0][0] != "shared", kv[0][0], kv[0][2], order[kv[0][1]])
    ):
        if not r.get("window"):
            continue
        used = cpu_sample.window(timeline, *r["window"])
        if not used:
            continue
        r["cpu_cores"] = used
        cells = [
            f"{used[k]['mean']} ({used[k]['max']})" if k in used else "—"
            for k in (*CPU_ROLES, "machine_busy")
        ]
        lines.append("| " + " | ".join([path, layout, name, *cells]) + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", choices=[*PATHS, "report"])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--layout", default="shared", help="how the host's cores were shared (a label)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--url", default="", help="the service, server or API (service, server, pipeline)")
    parser.add_argument("--key", default="", help="an API key (pipeline)")
    parser.add_argument(
        "--submit",
        choices=("jobs", "batch"),
        default="jobs",
        help="the pipeline's jobs as single submits (--concurrency in flight), or one /v1/batches upload "
        "per client process",
    )
    parser.add_argument("--served-model", default="SmolLM2-135M-Instruct", help="the model name (server)")
    parser.add_argument(
        "--plain", action="store_true", help="the pipeline's jobs with `retry_truncated: false` (no bounds)"
    )
    parser.add_argument("--prompts", type=Path, default=ROOT / ".data" / "prompts.jsonl")
    parser.add_argument("--schemas", type=Path, default=ROOT / ".data" / "jsonschemabench")
    parser.add_argument("-n", type=int, default=600, help="requests per set (the set cycled)")
    parser.add_argument("--n-schemas", type=int, default=50, help="jsonschemabench schemas in the mixed set")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight, over all clients")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--warmup", type=int, default=8, help="requests of the set sent first, untimed")
    parser.add_argument("--request-timeout-s", type=float, default=300)
    # The offline engine (the others take the same from run-paths.sh)
    parser.add_argument("--model", default="/tmp/hf")
    parser.add_argument("--backend", default="guidance")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192, help="0: vLLM's default")
    parser.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--attention-backend", default="FLASHINFER", help='"" lets vLLM choose')
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.path == "offline":
        run_offline(args)
    elif args.path in ("service", "server"):
        run_http(args, args.path)
    elif args.path == "pipeline":
        run_pipeline(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
