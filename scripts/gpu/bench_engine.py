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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a plain script (python3 scripts/gpu/bench_engine.py): find `scripts.gpu` in ROOT
    sys.path.append(str(ROOT))

from scripts.gpu.bench_paths import offline, serve, service_modes  # noqa: E402
from scripts.gpu.bench_requests import Request, build_requests, table  # noqa: E402

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
