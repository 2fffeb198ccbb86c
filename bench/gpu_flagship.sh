#!/usr/bin/env bash
# The GPU flagship: train the 8-bit caption model (configs/flagship.json: 28×28, 256 levels, 7.3M parameters,
# classifier-free-guidance dropout) against a wall-clock budget, evaluate it on all 10,000 official test images,
# draw a sample grid per caption, and leave everything under $OUT. Run it from the repository root; it needs no
# install (PYTHONPATH=.) and no internet, so it also runs on a lent machine with its own, older PyTorch.
#
#   OUT=/some/dir bash bench/gpu_flagship.sh                  # on one CUDA GPU: ~7.5 min training + ~2 min
#   OUT=/tmp/flagship DRY_RUN=1 bash bench/gpu_flagship.sh    # CPU rehearsal: tiny model, 1 minute, 200 images
#
# Training uses bf16 autocast, torch.compile, fused AdamW and PyTorch's fused (flash) attention. The learning
# rate follows warm-up + cosine over the *time* budget (schedule="time"), so the run ends at the low learning
# rate whenever the clock stops it; a checkpoint is written every minute, so a cut-off run can be resumed
# (add --resume to the train line) or evaluated as it is.
#
# What comes back under $OUT:
#   environment.json   PyTorch, CUDA and GPU versions; which attention kernels are available
#   log.jsonl          the training log (bits/dim, lr, img/s, tokens/s, MFU, peak memory per 50 steps)
#   evaluate.json      `evaluate --json`: test bits/dim on all 10,000 images, judge accuracy and Fréchet
#                      distance at guidance 1, 2, 3 and 4 (50 samples per class each)
#   summary.json       throughput, MFU and peak memory after compilation, steps, GPU-minutes, best guidance
#   flagship.pt        fp16 weights (~14 MB), the file shipped as data/checkpoints/flagship.pt
#   ship.json          its manifest entry (sha256, config, steps, bits/dim of the fp16 weights)
#   samples_g1.png, samples_best.png, generation.gif   one row per caption, 8 samples each
#   flagship.txt       everything the script printed
# The full training state (weights + AdamW moments, ~90 MB) stays in $RUN, outside $OUT.
set -euo pipefail

: "${OUT:?set OUT to the folder that receives the results}"
CONFIG=${CONFIG:-configs/flagship.json}
RUN=${RUN:-runs/flagship}
MINUTES=${MINUTES:-7.5}
PY=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
mkdir -p "$OUT" "$(dirname "$RUN")"
exec > >(tee -a "$OUT/flagship.txt") 2>&1

if [[ -n "${DRY_RUN:-}" ]]; then  # same commands, a model small enough for a CPU and a 1-minute budget
    DEVICE=cpu MINUTES=${DRY_MINUTES:-1}
    TRAIN_FLAGS=(--device cpu --d-model 32 --n-heads 2 --n-layers 1 --batch-size 8 --eval-every 20 --eval-images 20
                 --log-every 5 --ckpt-minutes 0.25)
    EVAL_FLAGS=(--limit 200 --per-class 2)
    EXPORT_LIMIT=50
else
    DEVICE=cuda TRAIN_FLAGS=() EVAL_FLAGS=() EXPORT_LIMIT=200
fi
echo "== $(date -u +%FT%TZ) flagship: $CONFIG, $MINUTES min on $DEVICE, run folder $RUN, results in $OUT"

"$PY" - "$OUT/environment.json" <<'EOF'
import json, platform, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(gpu=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                flash_sdp=torch.backends.cuda.flash_sdp_enabled(), capability=torch.cuda.get_device_capability(0),
                memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
EOF

# 1. train until the clock runs out (a fresh run; if $RUN already holds a checkpoint this stops with a message)
start=$(date +%s)
"$PY" -m imagen_tutorial train --config "$CONFIG" --out "$RUN" --max-minutes "$MINUTES" "${TRAIN_FLAGS[@]}"
train_s=$(( $(date +%s) - start ))
cp "$RUN/log.jsonl" "$OUT/log.jsonl"

# 2. evaluate: test bits/dim on all 10,000 test images, judge accuracy + Fréchet distance over a guidance sweep
"$PY" -m imagen_tutorial evaluate --checkpoint "$RUN/checkpoint.pt" --device "$DEVICE" --json \
    --guidance 1 --guidance 2 --guidance 3 --guidance 4 "${EVAL_FLAGS[@]}" > "$OUT/evaluate.json"
best=$("$PY" -c "import json,sys; e=json.load(open(sys.argv[1])); print(max(e['by_guidance'], key=lambda r: r['accuracy'])['guidance'])" "$OUT/evaluate.json")
echo "evaluate: $(head -c 400 "$OUT/evaluate.json") ... best guidance $best"

# 3. sample grids (one row per caption) at guidance 1 and at the best guidance, and the generation-order GIF
"$PY" -m imagen_tutorial sample --checkpoint "$RUN/checkpoint.pt" --device "$DEVICE" --n 8 --guidance 1 \
    --out "$OUT/samples_g1.png"
"$PY" -m imagen_tutorial sample --checkpoint "$RUN/checkpoint.pt" --device "$DEVICE" --n 8 --guidance "$best" \
    --out "$OUT/samples_best.png" --gif "$OUT/generation.gif"

# 4. export fp16 weights, the log and a manifest entry into $OUT (data/checkpoints is left alone)
"$PY" tools/ship_checkpoint.py flagship --run "$RUN" --limit "$EXPORT_LIMIT" --to "$OUT" \
    --how "trained for $MINUTES min (schedule=time) on one $DEVICE by bench/gpu_flagship.sh" > "$OUT/ship.json"


# 5. the figures the closing note needs: throughput and MFU after compilation, peak memory, GPU-minutes
"$PY" - "$OUT" "$train_s" "$best" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, train_s, best = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
steps = [r for r in rows if "img_per_s" in r]
warm = [r for r in steps if r["elapsed_s"] > 60] or steps  # skip the first minute: compilation, warm-up
median = lambda key: statistics.median(r[key] for r in warm) if all(r.get(key) is not None for r in warm) else None
evaluation = json.loads((out / "evaluate.json").read_text())
summary = {"steps": steps[-1]["step"], "train_wall_s": train_s, "gpu_minutes": round(train_s / 60, 2),
           "img_per_s": median("img_per_s"), "tokens_per_s": median("tokens_per_s"), "mfu": median("mfu"),
           "peak_mem_gb": max((r.get("peak_mem_gb") or 0) for r in steps),
           "test_bits_per_dim": evaluation["bits_per_dim"], "test_images": evaluation["images"],
           "best_guidance": best, "by_guidance": evaluation.get("by_guidance")}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
EOF
echo "== $(date -u +%FT%TZ) done in $(( $(date +%s) - start )) s"
