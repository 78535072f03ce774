#!/usr/bin/env bash
# On a GPU host without network, with the parts scripts/gpu/build-carry.sh made: gather the parts carried so
# far; once all are there, install the slim vLLM and its wheels into /tmp/site and turn the SmolLM2 GGUF
# into a bf16 Hugging Face folder /tmp/hf.
# Each call, carrying [".gpu", ".carryK"]: bash .gpu/device-setup.sh N   (N = number of parts).
# Once it prints "ready", the same call (or a later one while warm) runs vLLM with:
#   export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0
set -u
n=${1:?number of parts}
mkdir -p /tmp/parts && cp .carry[0-9]*/part* /tmp/parts/ 2>/dev/null
have=$(ls /tmp/parts | wc -l); echo "parts on the machine: $have of $n"
[ "$have" -ge "$n" ] || exit 0
if [ ! -d /tmp/site/vllm ]; then
  mkdir -p /tmp/b /tmp/site
  cat /tmp/parts/part* | tar -xf - -C /tmp/b || exit 1
  xz -dc /tmp/b/vllm-slim.tar.xz | tar -xf - -C /tmp/site || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site /tmp/b/wheels/*.whl 2>&1 | grep -v WARNING | tail -3
fi
if [ ! -f /tmp/hf/config.json ]; then
  PYTHONPATH=/tmp/site python3 - <<'PY'
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d, f = "/tmp/b/model", "SmolLM2-135M-Instruct.Q4_1.gguf"
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.bfloat16)
cfg = m.config
cfg.__dict__.pop("quantization_config", None)  # save as plain bf16 weights, which vLLM loads directly
plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
plain.load_state_dict(m.state_dict())
plain.save_pretrained("/tmp/hf"); tok.save_pretrained("/tmp/hf"); print("model ready in /tmp/hf")
PY
fi
PYTHONPATH=/tmp/site python3 -c 'import vllm, llguidance, xgrammar; print("vllm", vllm.__version__, "ready")'
