#!/usr/bin/env bash
# The GPU check of issue 7, as one short script for a lent GPU machine (bench/README.md, "GPU"):
#   1. training samples/s: newsclf defaults (`--precision auto`: TF32 on Ampere+, picked automatically
#      on CUDA) vs `--precision bf16` (autocast) vs `--precision fp32` (TF32 off) vs the student-style
#      baseline, alternating rounds;
#   1b. a torch.profiler summary of 10 steps of each side (GPU busy time, kernel launches per step);
#   2. whole default `newsclf train` runs on the GPU (--precision bf16 and auto), test macro-F1, wall time;
#   3. `newsclf evaluate` of the auto run with the default precision and fp32.
# Usage: bench/gpu.sh MODEL_DIR PREPARED_DATA_DIR OUT_DIR
# (PYTHON, ROWS, ROUNDS, DEVICE=cpu and TRAIN_ARGS for a dry run without a GPU)
set -euo pipefail
usage="usage: bench/gpu.sh MODEL_DIR PREPARED_DATA_DIR OUT_DIR"
model=$(cd "${1:?$usage}" && pwd)
data=$(cd "${2:?$usage}" && pwd)
out=${3:?$usage}
py=${PYTHON:-python3}
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. training throughput (bench/train_throughput.py --device ${DEVICE:-cuda})"
"$py" bench/train_throughput.py --device "${DEVICE:-cuda}" --data "$data" --model "$model" \
  --rows "${ROWS:-2345}" --rounds "${ROUNDS:-2}" --batch-sizes "${BATCH_SIZES:-16,64}" 2>&1 | tee "$out/throughput.txt"
echo "== 1b. where a step's time goes: torch.profiler over 10 steps of each side, batch 16"
"$py" bench/train_throughput.py --device "${DEVICE:-cuda}" --data "$data" --model "$model" \
  --rows 256 --rounds 1 --batch-sizes 16 --profile 10 2>&1 | grep -v "^USDT\|^ERROR:.*gpuGetDeviceCount" | tee "$out/profile.txt"

for p in bf16 auto; do  # auto last: step 3 evaluates models/latest
  echo "== 2. newsclf train, default settings but --precision $p"
  start=$(date +%s%N)
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
  (cd "$work" && "$py" -m newsclf --json train --data "$data" --model "$model" --precision "$p" ${TRAIN_ARGS:-}) \
    >"$out/train_$p.json"
  echo "wall, process start to exit: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  "$py" - "$out/train_$p.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))["data"]["metrics"]
print("train", d["train"], "best val", d["best_validation"]["macro_f1"], "test macro-F1", d["test"]["macro_f1"])
EOF
done

echo "== 3. newsclf evaluate: auto vs fp32"
for p in auto fp32; do
  (cd "$work" && "$py" -m newsclf --json evaluate --precision "$p") >"$out/evaluate_$p.json"
  "$py" -c "import json,sys; d=json.load(open(sys.argv[1]))['data']; print(sys.argv[2], 'macro-F1', d['macro_f1'], 'loss', d['loss'])" "$out/evaluate_$p.json" "$p"
done
