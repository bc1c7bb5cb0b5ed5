#!/usr/bin/env bash
# Issue 16's GPU checks in one pass, for a session lent a CUDA machine, each step under its own time
# limit so that one hang cannot eat the lease; everything lands in $OUT (log.txt holds all output).
# On an H200 (session 8, torch 2.11): the machine started in ~30 s; tests ~25 s per CUDA case (each
# head dim compiles its kernels), bench ~70-100 s per length, compiled ~180 s, compare not yet run:
# the steps of session 8 took ~12 minutes (profile and batch64, added since, perhaps 3 more), so a
# 15-minute lease runs them in two calls (name the steps): e.g. `tests profile batch64`, then the rest.
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh [STEP ...]     # steps: info tests profile bench batch64 compiled compare
#   DRY=1 OUT=/tmp/gpu_dry bash benchmarks/gpu_check.sh     # the plumbing on the CPU, tiny shapes
#
# Steps: info (GPU, torch, a bf16 matmul's rate), tests (tests/test_flex.py: FlexAttention against
# SDPA's float-mask path, forward and gradients, bf16), bench (Table 1 of the ALiBi paper at its
# model shape, 16 layers, d = 1024, 8 heads, bf16, L = 512 and 1024, all methods), profile (one
# training step of none and alibi under torch.profiler: the GPU's busy share and the top kernels, to
# tell the kernels' cost from the host's launches), batch64 (none, alibi, t5 at batch 64: does the
# bias methods' ratio rise once the host is hidden?), compiled (the
# same for none and alibi under torch.compile: MFU), compare (`compare --preset small` on WikiText-2
# from ./gpu_data, the token cache from ./.gpucache). Needs a python3 with torch (CUDA), typer, rich,
# sentencepiece, safetensors, numpy, matplotlib and pytest; posbench runs from this checkout.
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 POSBENCH_CACHE="$PWD/.gpucache"
py=${PYTHON:-python3}
steps=${*:-info tests profile bench batch64 compiled compare}
methods=none,learned,sinusoidal,scaled-sinusoidal,rotary,alibi,t5,xpos,kerple,fire
if [[ -n "${DRY:-}" ]]; then
    device=cpu; model=(--layers 2 --dim 64 --heads 4); batch=2; big_batch=4; timing=(--steps 1 --rounds 1)
    lengths=(64)
    compare=(--preset quick --pos none,alibi --train-len 32 --max-len 64 --eval-tokens 256)
else
    device=cuda; model=(--layers 16 --dim 1024 --heads 8); batch=16; big_batch=64; timing=(--steps 10 --rounds 3)
    lengths=(512 1024)
    compare=(--preset small)
fi
log() { tee -a "$out/log.txt"; }
step() {  # step NAME SECONDS COMMAND...: run it under a time limit, its output into the log
    local name=$1 limit=$2; shift 2
    [[ " $steps " == *" $name "* ]] || return 0
    echo "=== $name (limit ${limit}s): $*" | log
    local start=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | log
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s" | log
}

step info 60 $py benchmarks/gpu_info.py --device "$device"
step tests 300 $py -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/test_flex.py
step profile 120 $py benchmarks/gpu_profile.py --device "$device" --pos none,alibi --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$batch"
for L in "${lengths[@]}"; do
    step bench 150 $py -m posbench bench --device "$device" --pos "$methods" --train-len "$L" "${model[@]}" \
        --batch-size "$batch" "${timing[@]}" --json "$out/bench$L.json"
done
step batch64 150 $py -m posbench bench --device "$device" --pos none,alibi,t5 --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$big_batch" "${timing[@]}" --json "$out/batch64.json"
step compiled 240 $py -m posbench bench --device "$device" --pos none,alibi --compile --train-len "${lengths[0]}" \
    "${model[@]}" --batch-size "$batch" "${timing[@]}" --json "$out/compiled${lengths[0]}.json"
step compare 300 $py -m posbench compare "${compare[@]}" --device "$device" --data gpu_data/wikitext-2 \
    --out /tmp/gpu_compare --quiet
for f in results.json ppl_vs_length.png; do [[ -f /tmp/gpu_compare/$f ]] && cp /tmp/gpu_compare/$f "$out/compare_$f"; done
grep "^=== " "$out/log.txt"
