"""The paths scripts/gpu/bench_engine.py measures: vllm.LLM in one batch, and irq's service over HTTP.

Offline: `vllm.LLM.generate` on every accepted request in one call. The service: create_app over a
VLLMEngine under uvicorn, and the HTTP client that sends the requests to it at a given concurrency.
Each engine runs in a child process of its own (bench_engine.py's `--phase offline` / `--phase serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.clients import Clients
from scripts.gpu.bench_requests import (
    Outcome,
    Request,
    check,
    generate_request,
    outcome_from_text,
    spread,
    summarize,
)

# Offline: vllm.LLM, one batch (runs in its own process)


def offline(args: argparse.Namespace, requests: list[Request]) -> dict[str, Any]:
    llm, load_s = start_offline(args)
    outcomes, wall_s = offline_batch(llm, args, requests)
    return {"load_s": round(load_s, 1), "summary": summarize(outcomes, wall_s)}


def start_offline(args: argparse.Namespace) -> tuple[Any, float]:
    """The `vllm.LLM` the run's arguments describe, and the seconds it took to start.

    `args.max_num_batched_tokens` and `args.enable_chunked_prefill`, where given (scripts/gpu/paths_bench.py),
    set the engine's batching as irq's settings of the same names do; absent, vLLM's defaults for `LLM`.
    """
    from vllm import LLM

    from inference.engines.vllm import structured_outputs_config

    batching: dict[str, Any] = {}
    if getattr(args, "max_num_batched_tokens", 0):
        batching["max_num_batched_tokens"] = args.max_num_batched_tokens
    if getattr(args, "enable_chunked_prefill", None) is not None:
        batching["enable_chunked_prefill"] = args.enable_chunked_prefill
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
        **batching,
    )
    return llm, time.perf_counter() - started


def offline_batch(
    llm: Any, args: argparse.Namespace, requests: list[Request], warmup: int = 0
) -> tuple[list[Outcome], float]:
    """Every accepted request of `requests` in one `LLM.generate` call (after `warmup` of them in one
    call of their own, untimed); each request's outcome, and the seconds of the timed call."""
    from inference.engines.vllm import build_sampling_params, chosen_backend, prompt_token_ids

    tokenizer = llm.get_tokenizer()
    params = [build_sampling_params(generate_request(r, args)) for r in requests]
    accepted = screen(llm, params, tokenizer)
    batch = [i for i, why in enumerate(accepted) if why is None]
    prompts = [{"prompt_token_ids": prompt_token_ids(tokenizer, r.prompt, r.schema)} for r in requests]
    if warmup:
        first = batch[:warmup]
        llm.generate([prompts[i] for i in first], [params[i] for i in first], use_tqdm=False)
        params = [build_sampling_params(generate_request(r, args)) for r in requests]  # fresh, unused ones
    started, since = time.perf_counter(), time.monotonic()  # vLLM's request timestamps are monotonic
    outputs = llm.generate([prompts[i] for i in batch], [params[i] for i in batch], use_tqdm=False)
    wall_s = time.perf_counter() - started
    outcomes = [Outcome("rejected", detail=str(why)[:120]) if why else Outcome("ok") for why in accepted]
    for i, output in zip(batch, outputs, strict=True):
        backend = chosen_backend(params[i], args.backend)
        outcomes[i] = offline_outcome(output, requests[i].schema, backend, since)
    return outcomes, wall_s


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


def offline_outcome(output: Any, schema: dict[str, Any], backend: str, since: float | None = None) -> Outcome:
    """One offline request's outcome; with `since` (time.monotonic() as the batch was handed to vLLM), its
    latency is from then to its last token (vLLM's `last_token_ts`, the engine core's monotonic clock)."""
    completion = output.outputs[0]
    metrics = getattr(output, "metrics", None)
    ttft = getattr(metrics, "first_token_latency", 0.0) if metrics is not None else 0.0
    last = getattr(metrics, "last_token_ts", 0.0) if metrics is not None else 0.0
    outcome = outcome_from_text(
        completion.text,
        str(completion.finish_reason),
        schema,
        ttft_ms=round(ttft * 1000, 2) if ttft else None,
        backend=backend,
        latency_s=last - since if since is not None and last else None,
    )
    outcome.completion_tokens = len(completion.token_ids)
    outcome.prompt_tokens = len(output.prompt_token_ids or [])
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


async def post_all(
    send: Callable[[httpx.AsyncClient, Request, argparse.Namespace], Awaitable[Outcome]],
    base: str,
    requests: list[Request],
    concurrency: int,
    args: argparse.Namespace,
) -> list[Outcome]:
    """Every request through `send`, `concurrency` at a time, over that many connections (in pools of 32:
    bench/clients.py)."""
    async with Clients(concurrency, base_url=base, timeout=args.request_timeout_s) as clients:
        gate = asyncio.Semaphore(concurrency)

        async def one(request: Request) -> Outcome:
            async with gate:
                return await send(clients.next(), request, args)

        return list(await asyncio.gather(*(one(r) for r in requests)))


async def over_http(
    base: str, requests: list[Request], concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    started = time.perf_counter()
    outcomes = await post_all(post, base, requests, concurrency, args)
    return summarize(outcomes, time.perf_counter() - started)


async def post(http: httpx.AsyncClient, request: Request, args: argparse.Namespace) -> Outcome:
    body = generate_request(request, args).model_dump(by_alias=True)
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
        prompt_tokens=answer.get("prompt_tokens") or 0,
        engine_wait_ms=answer.get("engine_wait_ms"),
    )


def http_failure(status_code: int, answer: dict[str, Any], latency: float) -> Outcome:
    code = str(answer.get("code", f"http_{status_code}"))
    output = answer.get("output") or {}  # what the engine generated, for output_truncated and invalid_output
    tokens: dict[str, int] = dict(
        completion_tokens=output.get("completion_tokens") or 0, prompt_tokens=output.get("prompt_tokens") or 0
    )
    if code == "schema_unsupported":
        return Outcome("rejected", detail=code)
    if code == "output_truncated":
        return Outcome("truncated", "length", latency_s=latency, detail=code, **tokens)
    message = f"{code}: {str(answer.get('message', ''))[:80]}"
    return Outcome(
        "error", str(output.get("finish_reason") or ""), latency_s=latency, detail=message, **tokens
    )


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
