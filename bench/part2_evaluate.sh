#!/usr/bin/env bash
# Part II's figures for README "Results", from the shipped diffusion stages (data/checkpoints/diffusion_*.pt):
# each stage and the cascade on the text2img protocol (50 samples per class, judged at 16 levels), the SR stage on
# real 14x14 test inputs against bicubic and the originals, the steps and noise-augmentation sweeps, and images/s
# of both families at batch 100. Then the figures go into the manifest and bench/results_table.py prints the tables.
#   bash bench/part2_evaluate.sh          # about 90 minutes on a quiet 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=bench/results
mkdir -p "$R"
export TQDM_DISABLE=1
$PY -m imagen_tutorial evaluate --checkpoint data/checkpoints/diffusion_base.pt --json \
    --guidance 1 --guidance 2 --guidance 3 --guidance 5 > "$R/diffusion_base_eval.json"
$PY -m imagen_tutorial evaluate --checkpoint data/checkpoints/diffusion_sr.pt --json --guidance 1 --guidance 2 \
    --guidance 3 --aug-level 0 > "$R/diffusion_sr_eval.json"      # real 14x14 test inputs, so no augmentation
$PY -m imagen_tutorial evaluate --checkpoint cascade --json --guidance 1.5 --guidance 2 --guidance 3 \
    --sr-guidance 1 --aug-level 0.2 > "$R/cascade_eval.json"
$PY -m imagen_tutorial evaluate --checkpoint cascade --json --guidance 1.5 --guidance 3 \
    --sr-guidance 3 --aug-level 0.2 > "$R/cascade_eval_sr3.json"
$PY -m imagen_tutorial evaluate --checkpoint cascade --json --guidance 1.5 --guidance 2 --guidance 3 \
    --sr-guidance 1 --aug-level 0.2 --threshold 0.995 > "$R/cascade_eval_dynamic.json"
$PY tools/ship_checkpoint.py diffusion_base --evaluation "$R/diffusion_base_eval.json" > /dev/null
$PY tools/ship_checkpoint.py diffusion_sr --evaluation "$R/diffusion_sr_eval.json" > /dev/null
$PY tools/ship_checkpoint.py cascade --evaluation "$R/cascade_eval.json" --evaluation "$R/cascade_eval_sr3.json" \
    --evaluation "$R/cascade_eval_dynamic.json" > /dev/null
$PY bench/cascade_sweeps.py --guidance 3 1 --json "$R/cascade_sweeps.json"   # static clipping, the default
$PY bench/cascade_sweeps.py --guidance 1.5 3 --steps 1 2 5 10 25 50 100 --aug \
    --json "$R/cascade_steps_default.json"                                 # the default guidance, steps only
$PY bench/sampling.py --families --batches 100 --json "$R/sampling_families.json"
$PY bench/results_table.py
