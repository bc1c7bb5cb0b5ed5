#!/usr/bin/env bash
# The GPU checks of issue 7 in one pass, for a session lent a CUDA machine (about 5 minutes on an H100):
# the CUDA-only tests (FlexAttention against the SDPA mask path, its gradients, bf16), the ALiBi
# paper's Table 1 (`posbench bench`) at L = 512 and 1024 with the paper's model shape (16 layers,
# d = 1024, 8 heads), and a short bf16 + --compile training run.
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh
#
# Needs a python3 with torch (CUDA), typer, rich, sentencepiece, safetensors, numpy, matplotlib and
# pytest; posbench itself runs from this checkout (PYTHONPATH), nothing is installed or downloaded.
# Prepared without a GPU: the first session with one should expect to fix it up.
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
paper=(--layers 16 --dim 1024 --heads 8)

$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$out/device.txt"
$py -m pytest -q -p no:cacheprovider tests/test_flex.py tests/test_model.py 2>&1 | tee "$out/tests.txt"
for L in 512 1024; do
    $py -m posbench bench --device cuda --train-len "$L" --batch-size 8 --steps 10 --rounds 3 "${paper[@]}" \
        --json "$out/bench$L.json" 2>&1 | tee "$out/bench$L.txt"
done
$py -m posbench train --pos alibi --device cuda --compile --steps 300 --out "$out/alibi-compiled" \
    2>&1 | tail -n 8 | tee "$out/train.txt"
