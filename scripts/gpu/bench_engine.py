"""vLLM structured generation on the GPU: offline in one batch, then through irq's inference service (HTTP).

For one structured-output backend, builds the request set (every prompt with the IR schema, plus the first
N JSONSchemaBench schemas with a generic prompt), runs it through `vllm.LLM.generate` in one batch, then
through the service app (create_app over a VLLMEngine) under uvicorn, at concurrency 1 (a subset) and 64
(all), and reports acceptance, schema validity, truncation, throughput and latency. Each engine runs in its
own process, so the GPU is free between them. Run from the repository root:

    python3 -m scripts.gpu.bench_engine --backend guidance --model /tmp/hf --out $OUT/guidance.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parents[2]
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


def outcome_from_text(text: str, finish_reason: str, schema: dict[str, Any], **timing: Any) -> Outcome:
    try:
        document = json.loads(text)
    except ValueError:
        status = "truncated" if finish_reason == "length" else "error"
        return Outcome(status, finish_reason, detail="no JSON document", **timing)
    return Outcome("ok", finish_reason, valid=check(document, schema), **timing)


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


# Offline: vllm.LLM, one batch (runs in its own process)


def offline(args: argparse.Namespace, requests: list[Request]) -> dict[str, Any]:
    from vllm import LLM

    from inference.engines.vllm import (
        build_sampling_params,
        chosen_backend,
        prompt_token_ids,
        structured_outputs_config,
    )

    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        structured_outputs_config=structured_outputs_config(args.backend),
        attention_config={"backend": args.attention_backend} if args.attention_backend else None,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs,
        seed=0,
        disable_log_stats=False,  # keeps RequestOutput.metrics, for the time to first token
    )
    load_s = time.perf_counter() - started
    tokenizer = llm.get_tokenizer()
    params = [
        build_sampling_params(r.schema, args.max_tokens, args.temperature, args.top_p) for r in requests
    ]
    accepted = screen(llm, params, tokenizer)
    batch = [i for i, why in enumerate(accepted) if why is None]
    prompts = [{"prompt_token_ids": prompt_token_ids(tokenizer, r.prompt, r.schema)} for r in requests]
    started = time.perf_counter()
    outputs = llm.generate([prompts[i] for i in batch], [params[i] for i in batch], use_tqdm=False)
    wall_s = time.perf_counter() - started
    outcomes = [Outcome("rejected", detail=str(why)[:120]) if why else Outcome("ok") for why in accepted]
    for i, output in zip(batch, outputs, strict=True):
        outcomes[i] = offline_outcome(output, requests[i].schema, chosen_backend(params[i], args.backend))
    return {"load_s": round(load_s, 1), "summary": summarize(outcomes, wall_s)}


def screen(llm: Any, params: list[Any], tokenizer: Any) -> list[str | None]:
    """Why vLLM would refuse each request at submit (None: accepted), with the check submit runs.

    `LLM.generate` fails the whole batch on the first refused request, so refusals are found first.
    """
    config = llm.llm_engine.vllm_config
    reasons: list[str | None] = []
    for p in params:
        try:
            p.verify(
                config.model_config, config.speculative_config, config.structured_outputs_config, tokenizer
            )
            reasons.append(None)
        except ValueError as exc:
            reasons.append(str(exc) or "ValueError")
    return reasons


def offline_outcome(output: Any, schema: dict[str, Any], backend: str) -> Outcome:
    completion = output.outputs[0]
    metrics = getattr(output, "metrics", None)
    ttft = getattr(metrics, "first_token_latency", 0.0) if metrics is not None else 0.0
    outcome = outcome_from_text(
        completion.text,
        str(completion.finish_reason),
        schema,
        ttft_ms=round(ttft * 1000, 2) if ttft else None,
        backend=backend,
    )
    outcome.completion_tokens = len(completion.token_ids)
    return outcome


# The service: create_app over a VLLMEngine under uvicorn (runs in its own process)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from inference.engines.vllm import VLLMEngine
    from inference.service import create_app
    from irq.settings import Settings

    settings = Settings(
        vllm_model=args.model,
        structured_output_backend=args.backend,
        vllm_max_model_len=args.max_model_len,
        vllm_gpu_memory_utilization=args.gpu_memory_utilization,
        vllm_max_num_seqs=args.max_num_seqs,
    )
    engine = VLLMEngine(settings, attention_backend=args.attention_backend or None)
    try:
        uvicorn.run(
            create_app(engine=engine, settings=settings),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
        )
    finally:
        engine.shutdown()


async def over_http(
    base: str, requests: list[Request], concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=args.request_timeout_s, limits=limits) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one(request: Request) -> Outcome:
            async with gate:
                return await post(http, request, args)

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(r) for r in requests))
        wall_s = time.perf_counter() - started
    return summarize(list(outcomes), wall_s)


async def post(http: httpx.AsyncClient, request: Request, args: argparse.Namespace) -> Outcome:
    body = {
        "prompt": request.prompt,
        "schema": request.schema,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    started = time.perf_counter()
    try:
        response = await http.post("/generate", json=body)
    except httpx.HTTPError as exc:
        return Outcome("error", detail=type(exc).__name__)
    latency = time.perf_counter() - started
    answer = (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    )
    if response.status_code != 200:
        return http_failure(response.status_code, answer, latency)
    return Outcome(
        "ok",
        answer["finish_reason"],
        answer["completion_tokens"],
        latency,
        answer.get("ttft_ms"),
        answer.get("backend", ""),
        valid=check(answer["text"], request.schema),
    )


def http_failure(status_code: int, answer: dict[str, Any], latency: float) -> Outcome:
    code = str(answer.get("code", f"http_{status_code}"))
    if code == "schema_unsupported":
        return Outcome("rejected", detail=code)
    if code == "output_truncated":
        return Outcome("truncated", "length", latency_s=latency, detail=code)
    return Outcome("error", latency_s=latency, detail=f"{code}: {str(answer.get('message', ''))[:80]}")


async def wait_for_health(base: str, deadline_s: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        while time.monotonic() < deadline and alive():
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(
        f"the service at {base} did not answer /health (ended, or not within {deadline_s:.0f} s)"
    )


async def service_modes(
    base: str, requests: list[Request], args: argparse.Namespace, alive: Callable[[], bool]
) -> dict[str, Any]:
    await wait_for_health(base, 120, alive)
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        started = time.perf_counter()
        warm = await http.post("/warmup")
        warm.raise_for_status()
        load_s = time.perf_counter() - started
    return {
        "load_s": round(load_s, 1),
        "health": warm.json(),
        "service_c1": await over_http(base, spread(requests, args.serial_requests), 1, args),
        "service_c64": await over_http(base, requests, args.concurrency, args),
    }


# Orchestration: each engine in a child process of its own


def child_command(args: argparse.Namespace, phase: str, *extra: str) -> list[str]:
    passed = ["--backend", args.backend, "--model", args.model, "--max-tokens", str(args.max_tokens)]
    passed += ["--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs)]
    passed += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    passed += ["--temperature", str(args.temperature), "--top-p", str(args.top_p)]
    if args.attention_backend:
        passed += ["--attention-backend", args.attention_backend]
    return [sys.executable, "-m", "scripts.gpu.bench_engine", "--phase", phase, *passed, *extra]


@contextmanager
def child(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in a session of its own, ended with everything it started (vLLM's engine core)."""
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # uvicorn stops, then the engine shuts down
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_offline(args: argparse.Namespace, requests_file: Path, result_file: Path) -> dict[str, Any]:
    command = child_command(args, "offline", "--requests-file", str(requests_file), "--out", str(result_file))
    with child(command) as process:
        try:
            code = process.wait(timeout=args.phase_timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"the offline run took over {args.phase_timeout_s:.0f} s"}
    if code != 0:
        return {"error": f"the offline run exited with {code}"}
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def run_service(args: argparse.Namespace, requests: list[Request]) -> dict[str, Any]:
    base = f"http://127.0.0.1:{args.port}"
    with child(child_command(args, "serve", "--port", str(args.port))) as process:
        modes = service_modes(base, requests, args, lambda: process.poll() is None)
        return asyncio.run(asyncio.wait_for(modes, args.phase_timeout_s))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    requests = build_requests(args.prompts, args.schemas, args.n_schemas)
    with tempfile.TemporaryDirectory() as tmp:
        requests_file = Path(tmp) / "requests.json"
        requests_file.write_text(json.dumps([asdict(r) for r in requests]))
        offline_result = run_offline(args, requests_file, Path(tmp) / "offline.json")
    service = run_service(args, requests)
    return {
        "backend": args.backend,
        "model": args.model,
        "gpu": service.get("health", {}).get("gpu", ""),
        "attention_backend": args.attention_backend or "auto",
        "max_tokens": args.max_tokens,
        "requests": {"total": len(requests), "ir": sum(r.source == "ir" for r in requests)},
        "load_s": {"offline": offline_result.get("load_s"), "service": service.get("load_s")},
        "modes": {
            "offline": offline_result.get("summary", offline_result),
            "service_c1": service["service_c1"],
            "service_c64": service["service_c64"],
        },
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["guidance", "xgrammar", "auto"], required=True)
    parser.add_argument("--model", default="/tmp/hf")
    parser.add_argument("--prompts", type=Path, default=ROOT / ".data" / "prompts.jsonl")
    parser.add_argument("--schemas", type=Path, default=ROOT / ".data" / "jsonschemabench")
    parser.add_argument("--n-schemas", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--serial-requests", type=int, default=16, help="requests sent at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--attention-backend", default="", help='e.g. FLASHINFER; "" lets vLLM choose')
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--request-timeout-s", type=float, default=300)
    parser.add_argument("--phase-timeout-s", type=float, default=420)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--phase", choices=["all", "offline", "serve"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--requests-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.phase == "serve":
        serve(args)
        return
    if args.phase == "offline":
        requests = [Request(**r) for r in json.loads(args.requests_file.read_text())]
        args.out.write_text(json.dumps(offline(args, requests)))
        return
    result = bench(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(table([result]))


if __name__ == "__main__":
    main()
