#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: `irq bench compare` over three inference services on the
# one GPU, one per structured-output backend (guidance, xgrammar, auto), each vLLM engine with a quarter
# of the GPU's memory. The same jobs go through a fresh queue + store + worker to each in turn.
# Carries: .whl (irq's own wheels for Python 3.12), .fi (flashinfer) and .data (prompts.jsonl and
# compare-schemas/, the first 50 schemas of jsonschemabench in name order).
# Usage: bash scripts/gpu/run-compare.sh [MAX_TOKENS]     results: $OUT/compare.{md,json,png}
set -euo pipefail
max_tokens=${1:-512}
out=${OUT:-/tmp}
# The wheels may come in an earlier call than this one (64 MiB a call): install those carried now.
wheels=$(ls .whl/*.whl .fi/*.whl 2>/dev/null || true)
[ -z "$wheels" ] || python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $wheels
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
export IRQ_ENGINE=vllm IRQ_VLLM_MODEL=/tmp/hf IRQ_VLLM_MAX_MODEL_LEN=4096 IRQ_VLLM_GPU_MEMORY_UTILIZATION=0.25
endpoints=()
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
port=8101
for backend in guidance xgrammar auto; do
  # One engine at a time: vLLM measures free GPU memory as it starts.
  IRQ_STRUCTURED_OUTPUT_BACKEND=$backend IRQ_INFERENCE_PORT=$port \
    python3 -m irq inference serve > "$out/inference-$backend.log" 2>&1 &
  started=$(date +%s)
  until curl -sf "localhost:$port/health" >/dev/null; do
    sleep 1
    kill -0 $! 2>/dev/null || { tail -30 "$out/inference-$backend.log"; exit 1; }
  done
  curl -sf -X POST "localhost:$port/warmup" >/dev/null
  echo "$backend: ready and warm on :$port after $(( $(date +%s) - started )) s"
  endpoints+=(--endpoint "$backend=http://127.0.0.1:$port/generate")
  port=$((port + 1))
done
python3 -m irq bench compare "${endpoints[@]}" --prompts .data/prompts.jsonl --schemas .data/compare-schemas \
  --max-tokens "$max_tokens" --out "$out"
