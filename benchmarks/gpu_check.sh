#!/usr/bin/env bash
# The GPU checks in one pass, for a CUDA machine, each step under its own time
# limit and all of them under BUDGET seconds (a step's limit is cut to what is left), so that one hang
# cannot eat the time on the machine; everything lands in $OUT (log.txt holds all output). The two untimed steps,
# tests and compare, run side by side (the tests on 8 pytest workers: compiling kernels is what they
# wait on); the timed steps each run alone after them.
# On an H200 (2026-11-27, torch 2.11): the machine starts in ~35 s; tests ~4 minutes on 8
# workers (each CUDA case compiles its kernels), compare ~3 minutes beside them, kernels ~1, profile
# under 1, bench ~2 per length for ten methods, compiled ~3: 15 minutes of GPU time run it in two calls.
#
#   OUT=gpu_out BUDGET=540 bash benchmarks/gpu_check.sh [STEP ...]  # steps: info tests compare kernels profile bench batch64 compiled
#   DRY=1 OUT=/tmp/gpu_dry bash benchmarks/gpu_check.sh     # the plumbing on the CPU, tiny shapes
#
# Steps: info (GPU, torch, a bf16 matmul's rate), tests (tests/test_flex.py: FlexAttention against
# SDPA's float-mask path, forward and gradients; a bf16 training step of every method against fp32),
# compare (`compare --preset small` on WikiText-2 from ./gpu_data, the token cache from ./.gpucache),
# kernels (benchmarks/flex_kernels.py: one layer's FlexAttention against SDPA, per backward option),
# profile (one training step of none and alibi under torch.profiler: the GPU's busy share and the top
# kernels, to tell the kernels' cost from the host's launches), bench (Table 1 of the ALiBi paper at
# its model shape, 16 layers, d = 1024, 8 heads, bf16, all methods, at LENGTHS, default 512 1024),
# batch64 (none, alibi, t5 at batch 64: does the bias methods' ratio rise once the host is hidden?),
# compiled (none and alibi under torch.compile: MFU). Needs a python3 with torch (CUDA), typer, rich,
# sentencepiece, safetensors, numpy, matplotlib and pytest (pytest-xdist if there); posbench runs
# from this checkout.
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 POSBENCH_CACHE="$PWD/.gpucache"
py=${PYTHON:-python3}
steps=${*:-info tests compare kernels profile bench batch64 compiled}
budget=${BUDGET:-3600}
methods=none,learned,sinusoidal,scaled-sinusoidal,rotary,alibi,t5,xpos,kerple,fire
if [[ -n "${DRY:-}" ]]; then
    device=cpu; model=(--layers 2 --dim 64 --heads 4); batch=2; big_batch=4; timing=(--steps 1 --rounds 1)
    lengths=(64); kernel_shape=(--batch 2 --heads 2)
    compare=(--preset quick --pos none,alibi --train-len 32 --max-len 64 --eval-tokens 256)
else
    device=cuda; model=(--layers 16 --dim 1024 --heads 8); batch=16; big_batch=64; timing=(--steps 10 --rounds 3)
    read -ra lengths <<< "${LENGTHS:-512 1024}"; kernel_shape=()
    compare=(--preset small)
fi
side=$(mktemp -d)  # the output of the steps run beside others, until they are waited for
log() { tee -a "$out/log.txt"; }
run_step() {  # run_step NAME SECONDS COMMAND...: under a time limit (cut to the budget left), output to stdout
    local name=$1 limit=$2; shift 2
    local left=$((budget - SECONDS - 10))
    # a step cut far short of its limit would most likely be killed with nothing to show: skip it
    if ((left < limit * 6 / 10)); then echo "=== $name: skipped, ${left}s of the budget left"; return 0; fi
    ((left < limit)) && limit=$left
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS rc
    timeout -k 5 "$limit" "$@" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start))s"
}
step() {  # step NAME SECONDS COMMAND...: run_step if NAME was asked for, its output into the log
    [[ " $steps " == *" $1 "* ]] || return 0
    run_step "$@" | log
}
beside() {  # beside NAME SECONDS COMMAND...: the same, in the background; its output joins the log when waited for
    [[ " $steps " == *" $1 "* ]] || return 0
    run_step "$@" > "$side/$1.txt" &
}
workers=()  # 8 pytest workers where xdist is there, each test stopped after 150 s where pytest-timeout is
$py -c "import xdist" 2>/dev/null && [[ -z "${DRY:-}" ]] && workers=(-n 8)
$py -c "import pytest_timeout" 2>/dev/null && workers+=(--timeout 150)
step info 60 $py benchmarks/gpu_info.py --device "$device"
beside compare 300 $py -m posbench compare "${compare[@]}" --device "$device" --data gpu_data/wikitext-2 \
    --out /tmp/gpu_compare --quiet
step tests 240 $py -m pytest -p no:cacheprovider -p no:logging -p no:benchmark --tb=short -rfE -v "${workers[@]}" tests/test_flex.py
wait
for f in "$side"/*.txt; do [[ -f $f ]] && log < "$f" > /dev/null; done
for f in results.json ppl_vs_length.png; do [[ -f /tmp/gpu_compare/$f ]] && cp /tmp/gpu_compare/$f "$out/compare_$f"; done
step kernels 150 $py benchmarks/flex_kernels.py --device "$device" --lengths "${lengths[0]}" \
    "${kernel_shape[@]}"
step profile 120 $py benchmarks/gpu_profile.py --device "$device" --pos none,alibi --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$batch"
for L in "${lengths[@]}"; do
    step bench 170 $py -m posbench bench --device "$device" --pos "$methods" --train-len "$L" "${model[@]}" \
        --batch-size "$batch" "${timing[@]}" --json "$out/bench$L.json"
done
step batch64 150 $py -m posbench bench --device "$device" --pos none,alibi,t5 --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$big_batch" "${timing[@]}" --json "$out/batch64.json"
step compiled 240 $py -m posbench bench --device "$device" --pos none,alibi --compile --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$batch" "${timing[@]}" --json "$out/compiled${lengths[0]}.json"
grep "^=== " "$out/log.txt"
