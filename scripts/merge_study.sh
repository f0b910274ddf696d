#!/bin/bash
# Merge per-variant study folders into one (run from the repository root; folders under runs/):
#   bash scripts/merge_study.sh TARGET SRC...
# Each SRC's model folders are copied into runs/TARGET (a model already there is kept), the checkpoint paths in
# their evaluation JSON rewritten, and the top-level results merged. Then rerun the study command with --out
# runs/TARGET and every variant: nothing is retrained or re-evaluated, the tables and plot are regenerated.
# (Studies run one variant per process, one thread each, so that two cores run two variants side by side.)
set -e
target=$1; shift
mkdir -p "runs/$target"
for src in "$@"; do
  for d in runs/$src/*/; do
    m=$(basename "$d")
    [ -d "runs/$target/$m" ] && continue
    cp -r "$d" "runs/$target/$m"
    for f in runs/$target/$m/eval*/results.json; do
      [ -f "$f" ] && sed -i "s#runs/$src/#runs/$target/#g" "$f"
    done
    echo "merged $m from $src"
  done
done
# the top-level results (training time and throughput are only recorded where a model was trained)
python3 - "$target" "$@" <<'PY'
import json, os, sys
target, srcs = sys.argv[1], sys.argv[2:]
path = f"runs/{target}/results.json"
merged = json.load(open(path)) if os.path.exists(path) else {}
for s in srcs:
    p = f"runs/{s}/results.json"
    if os.path.exists(p):
        for k, v in json.load(open(p)).items():
            merged.setdefault(k, v)
json.dump(merged, open(path, "w"), indent=1)
print("results for", list(merged))
PY
