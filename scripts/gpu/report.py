"""One markdown report from several bench_engine.py result files (one per backend).

python3 -m scripts.gpu.report guidance.json xgrammar.json auto.json [--out report.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scripts.gpu.bench_requests import table


def setup_table(results: list[dict[str, Any]]) -> str:
    """What each run was: model, GPU, attention backend, request set, and each engine's load time."""
    head = [
        "backend",
        "model",
        "gpu",
        "attention",
        "requests (IR)",
        "max_tokens",
        "load offline s",
        "load service s",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        requests, load = r.get("requests", {}), r.get("load_s", {})
        cells = [
            r.get("backend"),
            r.get("model"),
            r.get("gpu") or "—",
            r.get("attention_backend"),
            f"{requests.get('total')} ({requests.get('ir')})",
            r.get("max_tokens"),
            load.get("offline") or "—",
            load.get("service") or "—",
        ]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


def rejections(results: list[dict[str, Any]]) -> str:
    """Why requests were refused or failed, per backend and mode (the reasons vLLM and the service gave)."""
    lines = []
    for r in results:
        for mode, summary in r.get("modes", {}).items():
            for why, count in (summary.get("details") or {}).items():
                lines.append(f"- {r.get('backend')} / {mode}: {count} × {why}")
    return "\n".join(lines) or "- none"


def report(results: list[dict[str, Any]]) -> str:
    return "\n\n".join(
        [
            "## Runs",
            setup_table(results),
            "## Results",
            table(results),
            "Offline `backends used` counts vLLM's per-request choice; the service reports the backend that "
            "compiled each grammar (with `auto`, the engine's one backend, from its first request).",
            "## Refusals and failures",
            rejections(results),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = report([json.loads(path.read_text()) for path in args.results])
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
