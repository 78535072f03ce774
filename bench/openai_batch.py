"""A large OpenAI batch through the OpenAI-compatible API: a file of N chat-completion lines (the IR
prompts' kind, no `response_format`: plain text) uploaded to `/openai/v1/files`, a batch created from it,
followed to the end, its output file downloaded; on the simulated engine (instant answers), so that the
figures are irq's. Reports the upload, create (validate + store + enqueue) and download times, jobs/s from
the create to the last job, and the API process's peak RSS (`VmHWM`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import console, machine, stack

ENDPOINT = "/v1/chat/completions"


def _peak_rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def _write_file(path: Path, lines: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            messages = [{"role": "user", "content": f"A function that returns the {i}th prime"}]
            body = {"model": "SmolLM2-135M-Instruct", "max_tokens": 512, "messages": messages}
            f.write(
                json.dumps({"custom_id": f"r{i}", "method": "POST", "url": ENDPOINT, "body": body}) + "\n"
            )


def run(lines: int, out_dir: Path, workers: int = 1) -> dict[str, Any]:
    env = {"IRQ_MAX_INFLIGHT_JOBS": "0", "IRQ_RATE_LIMIT_PER_S": "0", "IRQ_WORKER_CONCURRENCY": "128"}
    with stack(latency_s=0.0, slots=1024, workers=workers, env=env) as bench:
        path = bench.workdir / "batch.jsonl"
        _write_file(path, lines)
        api_pid = next(s.proc.pid for s in bench.services if s.name == "api")
        headers = {"Authorization": f"Bearer {bench.key}"}
        with httpx.Client(base_url=bench.api + "/openai/v1", headers=headers, timeout=3600) as http:
            started = time.perf_counter()
            with path.open("rb") as f:
                uploaded = http.post("/files", files={"file": ("batch.jsonl", f)}, data={"purpose": "batch"})
            upload_s = time.perf_counter() - started
            file_id = uploaded.raise_for_status().json()["id"]
            started = time.perf_counter()
            create = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
            batch = http.post("/batches", json=create).raise_for_status().json()
            create_s = time.perf_counter() - started
            console.print(f"uploaded in {upload_s:.1f} s, created ({batch['status']}) in {create_s:.1f} s")
            while batch["status"] in ("validating", "in_progress", "finalizing"):
                time.sleep(1)
                batch = http.get(f"/batches/{batch['id']}").raise_for_status().json()
            run_s = time.perf_counter() - started
            started = time.perf_counter()
            out_lines = 0
            with http.stream("GET", f"/files/{batch['output_file_id']}/content") as content:
                for _ in content.iter_lines():
                    out_lines += 1
            download_s = time.perf_counter() - started
        peak_mb = _peak_rss_mb(api_pid)
    result = {
        "machine": machine(),
        "lines": lines,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "status": batch["status"],
        "request_counts": batch["request_counts"],
        "upload_s": round(upload_s, 2),
        "create_s": round(create_s, 2),
        "create_to_done_s": round(run_s, 1),
        "jobs_per_s": round(lines / run_s, 1),
        "download_s": round(download_s, 2),
        "output_lines": out_lines,
        "api_peak_rss_mb": round(peak_mb, 1),
        "workers": workers,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "openai_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps(result))
    console.print(f"wrote {out_dir / 'openai_batch.json'}")
    return result
