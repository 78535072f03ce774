#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: `irq bench compare` through one irq deployment (one API, one
# `irq worker` serving every endpoint) to inference services sharing the one GPU, one per structured-output
# backend, all registered as endpoints of the same model in one registry file.
# Carries: .whl (irq's own wheels for Python 3.12), .fi (flashinfer) and .data (prompts.jsonl and
# compare-schemas/, the first 50 schemas of jsonschemabench in name order), in this call or an earlier one
# while the machine stays warm (each wheel installed into /tmp/site once).
# Usage: bash scripts/gpu/run-compare.sh     results: $OUT/compare.{md,json,png}, $OUT/endpoints.toml, logs
# Environment: BACKENDS ("guidance xgrammar"), MAX_TOKENS (512), MEMORY (each engine's share of the GPU's
#   memory, 0.3), CONCURRENCY (64 jobs in flight, over all endpoints), MAX_INFLIGHT (64 per endpoint).
#   A dry run on a CPU machine: ENGINE=simulated SITE=/tmp/empty-site, with a Python holding irq on PATH.
set -euo pipefail
out=${OUT:-/tmp}
site=${SITE:-/tmp/site}
backends=${BACKENDS:-guidance xgrammar}
mkdir -p "$out"
source scripts/gpu/common.sh
install_carried "$site"
export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
export IRQ_ENGINE=${ENGINE:-vllm} IRQ_VLLM_MODEL=/tmp/hf IRQ_SERVED_MODEL=SmolLM2-135M-Instruct IRQ_VLLM_MAX_MODEL_LEN=4096
export IRQ_VLLM_GPU_MEMORY_UTILIZATION=${MEMORY:-0.3} IRQ_VLLM_ATTENTION_BACKEND=FLASHINFER
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
registry=$out/endpoints.toml
: > "$registry"
port=8101
for backend in $backends; do
  echo -n "$backend: "
  start_service $port "$out/inference-$backend.log" IRQ_STRUCTURED_OUTPUT_BACKEND="$backend"
  cat >> "$registry" <<EOF
[[endpoints]]
name = "smollm2-$backend"
url = "http://127.0.0.1:$port/generate"
model = "SmolLM2-135M-Instruct"
backend = "$backend"
max_inflight = ${MAX_INFLIGHT:-64}

EOF
  port=$((port + 1))
done
[ "${1:-}" != warm ] || exit 0
python3 -m cli bench compare --endpoints-file "$registry" --prompts .data/prompts.jsonl \
  --schemas .data/compare-schemas --max-tokens "${MAX_TOKENS:-512}" --concurrency "${CONCURRENCY:-64}" \
  --out "$out" 2>&1 | tee "$out/bench.log"
