#!/usr/bin/env bash
# Everything one short lease of a CUDA machine should do, in one command (run from the repository root):
#   bash benchmarks/gpu_lease.sh BUDGET_S
# 1. install the comparison packages carried as wheels in .whl/ (titans-pytorch, fla-core and their pure-Python
#    dependencies; nothing is fetched), 2. compile the kernels of every benchmark size in parallel processes while
#    the gpu-marked tests run, 3. the benchmark, starting no new size after BUDGET_S seconds. Logs and the JSON go
#    to $OUT (or /tmp/gpu_out). The wheels (ignored by git; the lent machine has torch, triton, einops, numpy):
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     titans-pytorch==0.5.5 fla-core==0.6.0 assoc-scan axial-positional-embedding einx hyper-connections \
#     rotary-embedding-torch tensordict x-transformers accelerated-scan frozendict torch-einops-utils pyvers loguru
#   and pass carry=[".whl"] to the device call.
set -u
BUDGET=${1:-200}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/device.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.log"
t0=$(date +%s)
for i in 0 1 2 3 4 5; do
  python3 benchmarks/gpu_memory_op.py --compile-only --shard $i/6 > "$OUT/compile_$i.log" 2>&1 &
done
python3 -m pytest -q -m gpu -p no:cacheprovider -n 6 tests/ops/test_memory_triton.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.log"
wait
cat "$OUT"/compile_*.log > "$OUT/compile.log"; rm -f "$OUT"/compile_?.log
echo "compiled after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.log"
tail -5 "$OUT/compile.log"
tail -25 "$OUT/gpu_tests.log"
python3 benchmarks/gpu_memory_op.py --lengths 8192,2048 --repeats 3 --budget-s "$BUDGET" \
  --out "$OUT/gpu_memory_op.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^{\"D\""
echo "done after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.log"
