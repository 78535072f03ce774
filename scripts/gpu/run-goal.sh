#!/usr/bin/env bash
# On the GPU host, after the setup calls (scripts/gpu/README.md): the goal of valid documents per GPU-second,
# in one command. On the same requests, budgets and engine settings (scripts/gpu/run-paths.sh): vLLM's own
# OpenAI server, irq's inference service alone, and irq's pipeline with the product's defaults on one engine
# and on ENGINES engines of the model sharing the GPU, on the IR set and the mixed set, interleaved (the
# order turned around every other repetition) and REPEAT times; the report gives req/s and valid
# documents/s of every run, the means over the repetitions and their ratios to vLLM's server.
# Each call runs what fits in its DEADLINE_S and keeps the results on the machine (/tmp/irq-paths): call
# the same command again, while the machine is warm, to go on where it stopped.
# Carries: .whl, .fi (installed once) and .data.
# Usage: bash scripts/gpu/run-goal.sh     report: $OUT/paths.md (its last section: "Goal")
# Environment: ENGINES (3), REPEAT (2), CONCURRENCY (512 in flight for every path), N (600 a set), and the
#   rest of run-paths.sh's. A dry run on a CPU machine: ENGINE=simulated SITE=/tmp/empty (run-paths.sh).
set -euo pipefail
engines=${ENGINES:-3}
export CONCURRENCY=${CONCURRENCY:-512}
runs=()
for k in $(seq "${REPEAT:-2}"); do
  one=("service:shared-r$k" "pipeline:shared-4a-r$k" "server:shared-r$k" "pipeline:shared-4a-${engines}e-r$k")
  if [ $((k % 2)) = 0 ]; then
    runs+=("${one[3]}" "${one[2]}" "${one[1]}" "${one[0]}")
  else
    runs+=("${one[@]}")
  fi
done
# run-paths.sh repeats its own list under REPEAT: the list above is already repeated.
REPEAT=1 exec bash scripts/gpu/run-paths.sh "${runs[@]}"
