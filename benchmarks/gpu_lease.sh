#!/usr/bin/env bash
# Everything one short lease of a CUDA machine should do, in one command (run from the repository root):
#   bash benchmarks/gpu_lease.sh TOTAL_S
# finishing within TOTAL_S seconds (default 560):
# 1. install the comparison packages carried as wheels in .whl/ (titans-pytorch, fla-core and their pure-Python
#    dependencies; nothing is fetched);
# 2. compile the kernels of every benchmark size (every candidate configuration where a size has no measured one)
#    in parallel processes while the gpu-marked tests run with the default configurations (two fifths of the time
#    at most);
# 3. the benchmark with --tune (the fastest configuration of each kernel shape without a measured one, written to
#    $OUT/tuned.json), starting no new size once too little time is left for step 4;
# 4. the gpu-marked tests of the tuned configurations (TITANS_TRITON_CONFIGS; the ``seq`` variant at every shape, which
#    launches exactly those; FINAL_K: a pytest -k expression instead).
# Optional environment: SIZES ('D,depth,chunk,T;...', default the grid at 8K then 2K), TUNE_EACH=1 (time the
# candidates at every size, not only at each kernel shape's first: gpu_memory_op's --tune-every-size),
# SHARDS (compile processes of step 2, default 10), DEFAULT_TESTS=0 (skip the first gpu tests), EXTRA_TESTS
# (pytest paths whose gpu-marked tests run first, e.g. tests/models/test_compile.py), FINAL_TESTS=0 (skip step 4),
# BASELINES (gpu_memory_op's --baselines; '' for none), BASELINES_AT (its --baselines-at: only at these sizes),
# TITANS_TRITON_CONFIGS (configurations from an earlier lease: their sizes are not re-tuned), CANDIDATES (tune
# every size again, over only the candidates whose names start with these comma-separated prefixes),
# LAST_CANDIDATES (after step 3, in the last LAST_S seconds (default 150) before step 4: every size tuned over each
# of these candidates alone, a process per candidate, e.g. 'tf32x3-bwd,tf32x3-pre', then the gpu-marked tests of
# those variants (LAST_TESTS: a pytest -k expression instead, e.g. 'phased' for every variant in passes); for
# _gpu_candidates.RISKY: a candidate that may end the CUDA context ends only its own process); STALLS (candidates,
# e.g. 'default,phased': after that, in the last STALLS_S seconds (default 120) before step 4, each one's kernels
# sampled for their stall reasons at STALLS_SIZES (default '128,2,64,2048'), a process per candidate:
# benchmarks/gpu_stalls.py, files stalls_<candidate>.{hatchet,json,log}); PROFILE (implementations, e.g.
# 'chunk,triton': then, in the last PROFILE_S seconds (default 90) before step 4, one profiled forward and
# forward+backward call of each at PROFILE_SIZES (default '128,2,64,2048'), kernel time by kernel and kind:
# benchmarks/gpu_profile.py, files profile.{json,log}; PROFILE_CANDIDATES: triton under these candidates instead of
# the defaults, e.g. 'default,piece-ieee').
# Logs and JSON go to $OUT (or /tmp/gpu_out); all but device.log, bench.log and the benchmark's JSON end up in
# logs.tgz. The wheels (.gitignore has .whl; the lent machine has torch, triton, einops, numpy):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     titans-pytorch==0.5.5 fla-core==0.6.0 assoc-scan axial-positional-embedding einx hyper-connections \
#     rotary-embedding-torch tensordict x-transformers accelerated-scan frozendict torch-einops-utils pyvers loguru
#   and pass carry=[".whl"] to the device call.
set -u
TOTAL=${1:-560}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
t0=$(date +%s)
left() { echo $(( t0 + TOTAL - $(date +%s) )); }
stamp() { echo "$1 after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.log"; }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/device.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.log"
GRID=(--lengths 8192,2048)
[ -n "${SIZES:-}" ] && GRID=(--sizes "$SIZES")
[ "${TUNE_EACH:-0}" = 1 ] && GRID+=(--tune-every-size)
SIZES_ARG=("${GRID[@]}")
[ -n "${CANDIDATES:-}" ] && GRID+=(--retune --candidates "$CANDIDATES")
COMPILE=("${GRID[@]}")
[ -n "${CANDIDATES:-}" ] && [ -n "${LAST_CANDIDATES:-}" ] \
  && COMPILE=("${SIZES_ARG[@]}" --retune --candidates "$CANDIDATES,$LAST_CANDIDATES")
PHASE1=$(( TOTAL * 2 / 5 ))
SHARDS=${SHARDS:-10}
for i in $(seq 0 $(( SHARDS - 1 ))); do  # a kernel that crashes here ends only its shard
  # one Inductor compile thread a shard (the compiled piece backward, KernelConfig.compiled): the shards would
  # otherwise each start a pool of as many workers as the machine has cores
  TORCHINDUCTOR_COMPILE_THREADS=1 timeout "$PHASE1" python3 benchmarks/gpu_memory_op.py --tune --compile-only \
    "${COMPILE[@]}" --shard "$i/$SHARDS" \
    > "$OUT/compile_$i.log" 2>&1 &
done
if [ -n "${EXTRA_TESTS:-}" ]; then  # beside the compile shards, before the default gpu tests
  env -u TITANS_TRITON_CONFIGS timeout "$PHASE1" python3 -m pytest -v -m gpu -p no:cacheprovider $EXTRA_TESTS \
    > "$OUT/gpu_tests_extra.log" 2>&1
  stamp "gpu tests ($EXTRA_TESTS) rc=$?"
  tail -3 "$OUT/gpu_tests_extra.log"
fi
if [ "${DEFAULT_TESTS:-1}" = 1 ]; then
  env -u TITANS_TRITON_CONFIGS timeout "$PHASE1" python3 -m pytest -v -m gpu -k "not tf32x3" -p no:cacheprovider \
    -n 5 tests/ops/test_memory_triton.py > "$OUT/gpu_tests.log" 2>&1
  stamp "gpu tests (default configurations) rc=$?"
fi
wait
cat "$OUT"/compile_*.log > "$OUT/compile.log"; rm -f "$OUT"/compile_*[0-9].log
stamp "compiled ($(grep -c ^compiled "$OUT/compile.log") done, $(grep -c ^FAILED "$OUT/compile.log") failed)"
[ -f "$OUT/gpu_tests.log" ] && tail -3 "$OUT/gpu_tests.log"
[ -n "${TITANS_TRITON_CONFIGS:-}" ] && cp "$TITANS_TRITON_CONFIGS" "$OUT/tuned.json"
# Step 4 needs about 100 s; a tuned size can take a minute.
RESERVE=$([ "${FINAL_TESTS:-1}" = 1 ] && echo 100 || echo 10)
LAST=$([ -n "${LAST_CANDIDATES:-}" ] && echo "${LAST_S:-150}" || echo 0)
STALLS_T=$([ -n "${STALLS:-}" ] && echo "${STALLS_S:-120}" || echo 0)
PROFILE_T=$([ -n "${PROFILE:-}" ] && echo "${PROFILE_S:-90}" || echo 0)
RESERVE=$(( RESERVE + LAST + STALLS_T + PROFILE_T ))
timeout $(( $(left) - RESERVE )) python3 benchmarks/gpu_memory_op.py --tune --tune-out "$OUT/tuned.json" \
  "${GRID[@]}" --repeats 2 --budget-s $(( $(left) - RESERVE - 70 )) --out "$OUT/gpu_memory_op.json" \
  --baselines "${BASELINES-titans-pytorch,fla}" --baselines-at "${BASELINES_AT:-}" \
  > "$OUT/bench.log" 2>&1
stamp "benchmark rc=$?"
grep -v '^{' "$OUT/bench.log" | tail -25
if [ "$LAST" -gt 0 ]; then  # two thirds of LAST_S timing (a process per candidate), then their gpu tests
  IFS=, read -r -a NAMES <<< "$LAST_CANDIDATES"
  for n in "${!NAMES[@]}"; do
    name=${NAMES[$n]}
    share=$(( ($(left) - RESERVE + LAST * 2 / 3) / (${#NAMES[@]} - n) ))
    timeout "$share" python3 benchmarks/gpu_memory_op.py --tune --retune --candidates "$name" \
      --tune-out "$OUT/tuned_$name.json" "${SIZES_ARG[@]}" --repeats 2 --budget-s $(( share - 40 )) \
      --out "$OUT/gpu_memory_op_$name.json" --baselines "" > "$OUT/bench_$name.log" 2>&1
    stamp "benchmark ($name) rc=$?"
    grep -v '^{' "$OUT/bench_$name.log" | tail -8
  done
  # their gpu tests only (every tf32x3 variant took 194 s in run 11): test ids name the variant
  timeout $(( $(left) - RESERVE + LAST )) python3 -m pytest -v -m gpu -k "${LAST_TESTS:-${LAST_CANDIDATES//,/ or }}" \
    -p no:cacheprovider -n 6 tests/ops/test_memory_triton.py > "$OUT/gpu_tests_last.log" 2>&1
  stamp "gpu tests (${LAST_TESTS:-$LAST_CANDIDATES}) rc=$?"
  tail -3 "$OUT/gpu_tests_last.log"
fi
RESERVE=$(( RESERVE - LAST ))  # what the steps after this one keep (each gives its own back when done)
if [ "$STALLS_T" -gt 0 ]; then  # a process per candidate: a kernel that crashes ends only its own
  IFS=, read -r -a NAMES <<< "$STALLS"
  for n in "${!NAMES[@]}"; do
    name=${NAMES[$n]}
    share=$(( ($(left) - RESERVE + STALLS_T) / (${#NAMES[@]} - n) ))
    timeout "$share" python3 benchmarks/gpu_stalls.py --sizes "${STALLS_SIZES:-128,2,64,2048}" --candidates "$name" \
      --out-dir "$OUT" > "$OUT/stalls_$name.log" 2>&1
    stamp "stalls ($name) rc=$?"
    grep '^## ' "$OUT/stalls_$name.log" | cut -c1-200
  done
fi
RESERVE=$(( RESERVE - STALLS_T ))
if [ "$PROFILE_T" -gt 0 ]; then
  timeout $(( $(left) - RESERVE + PROFILE_T )) python3 benchmarks/gpu_profile.py \
    --sizes "${PROFILE_SIZES:-128,2,64,2048}" --impls "$PROFILE" --candidates "${PROFILE_CANDIDATES:-}" \
    --out "$OUT/profile.json" > "$OUT/profile.log" 2>&1
  stamp "profile rc=$?"
  grep '^## ' "$OUT/profile.log" | cut -c1-220
fi
if [ "${FINAL_TESTS:-1}" = 1 ] && [ -f "$OUT/tuned.json" ] && [ "$(left)" -gt 30 ]; then
  TITANS_TRITON_CONFIGS="$OUT/tuned.json" timeout $(( $(left) - 5 )) python3 -m pytest -v -m gpu -k "${FINAL_K:-seq}" \
    -p no:cacheprovider -n 6 tests/ops/test_memory_triton.py > "$OUT/gpu_tests_tuned.log" 2>&1
  stamp "gpu tests (tuned configurations) rc=$?"
  tail -3 "$OUT/gpu_tests_tuned.log"
fi
stamp done
# At most 8 files come back from a lent machine: the logs beyond the first two, the tuned configurations and the
# stall samples in one.
cd "$OUT" && tar czf logs.tgz --remove-files $(ls -- *.log tuned*.json stalls_* profile* 2>/dev/null | sort -u \
  | grep -vx 'device.log\|bench.log')
