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
# and warmed up (one engine at a time: vLLM measures free GPU memory as it starts).
start_service() {
  local port=$1 log=$2 started
  shift 2
  env "$@" IRQ_INFERENCE_PORT="$port" python3 -m irq inference serve > "$log" 2>&1 &
  local pid=$!
  started=$(date +%s)
  until curl -sf "localhost:$port/health" >/dev/null; do
    sleep 1
    kill -0 $pid 2>/dev/null || { tail -30 "$log"; exit 1; }
  done
  curl -sf -X POST "localhost:$port/warmup" >/dev/null
  echo "service on :$port ready and warm after $(( $(date +%s) - started )) s"
}
