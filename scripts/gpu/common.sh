# Sourced by the run-*.sh scripts on the GPU host: the carried wheels installed once, and an inference
# service started and warmed up.

# install_carried SITE: each wheel carried in .whl/ or .fi/ installed into SITE, unless a
# NAME-VERSION.dist-info of it is there already (carrying it again then costs only the transfer).
install_carried() {
  local site=$1 todo=() w dist
  for w in .whl/*.whl .fi/*.whl; do
    [ -f "$w" ] || continue
    dist=$(basename "$w" | cut -d- -f1-2)
    [ -d "$site/$dist.dist-info" ] || todo+=("$w")
  done
  [ ${#todo[@]} -eq 0 ] && return 0
  echo "installing ${#todo[@]} wheel(s) into $site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "${todo[@]}"
}

# start_service PORT LOG [VAR=VALUE …]: `irq inference serve` on PORT with the settings given, waited for
# and warmed up; with IRQ_INFERENCE_REPLICAS=N among them, its N replicas on PORT … PORT+N-1, each warmed up
# (their engines start one at a time: vLLM measures free GPU memory as it starts). `service_pid`: its pid.
start_service() {
  local port=$1 log=$2 started replicas=1 arg p
  shift 2
  for arg in "$@"; do [[ $arg == IRQ_INFERENCE_REPLICAS=* ]] && replicas=${arg#*=}; done
  env "$@" IRQ_INFERENCE_PORT="$port" python3 -m cli inference serve > "$log" 2>&1 &
  service_pid=$!
  started=$(date +%s)
  for p in $(seq "$port" $(( port + replicas - 1 ))); do
    until curl -sf "localhost:$p/health" >/dev/null; do
      sleep 1
      kill -0 $service_pid 2>/dev/null || { tail -30 "$log"; exit 1; }
    done
    curl -sf -X POST "localhost:$p/warmup" >/dev/null
  done
  echo "service on :$port ($replicas engine(s)) ready and warm after $(( $(date +%s) - started )) s"
}

# descendants PID: the process ids under PID, children first.
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done
}
