#!/usr/bin/env bash
# TensorBoard as a user sees it: screenshots of a real small run and a real small sweep.
#
#   DATA_DIR=/path/to/data scripts/tensorboard_screenshots.sh [OUT]    # OUT: results/figures/tensorboard
#
# 1. trains a small VAE-MLP run (5 short epochs) and a 2-job LN-placement sweep
#    (model.norm_first=false,true, 2 layers, 40 steps) into $LOGS (default: a temporary folder;
#    an existing $LOGS with both is reused, so the pages can be re-shot without training);
# 2. starts `tensorboard --logdir` on each and loads its pages in headless Chromium
#    (Debian: `apt-get install chromium`): CUSTOM SCALARS, TIME SERIES (the page TensorBoard
#    opens on), SCALARS, IMAGES and HPARAMS for the run; CUSTOM SCALARS and HPARAMS for the sweep;
# 3. writes <OUT>/{run,sweep}_<page>.png, quantised to 256 colours (each well under 300 KB).
# Needs: the repository's .venv (PY, TENSORBOARD), chromium, a free port (PORT, default 6006).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-results/figures/tensorboard}
PY=${PY:-.venv/bin/python}
TENSORBOARD=${TENSORBOARD:-.venv/bin/tensorboard}
CHROMIUM=${CHROMIUM:-chromium}
PORT=${PORT:-6006}
LOGS=${LOGS:-$(mktemp -d /tmp/tensorboard_screenshots.XXXXXX)}
: "${DATA_DIR:?set DATA_DIR to the data folder (MNIST, WikiText-2)}"
export DATA_DIR
mkdir -p "$OUT" "$LOGS"

if [[ ! -d $LOGS/run/tensorboard ]]; then
    "$PY" train.py model=vae_mlp trainer.max_epochs=5 trainer.limit_train_batches=40 \
        trainer.limit_val_batches=5 trainer.limit_test_batches=1 trainer.log_every_n_steps=10 \
        model.nll_num_samples=50 model.naive_num_samples=50 data.eval_batch_size=500 \
        callbacks.progress_bar.refresh_rate=0 "hydra.run.dir=$LOGS/run"
fi
if [[ ! -f $LOGS/sweep/summary.csv ]]; then
    "$PY" train.py -m experiment=ln_placement model.norm_first=false,true model.num_layers=2 \
        model.d_model=64 model.d_ff=64 trainer.limit_train_batches=40 trainer.limit_val_batches=5 \
        trainer.log_every_n_steps=2 callbacks.grad_probe.init_batches=4 \
        callbacks.grad_probe.every_n_steps=2 callbacks.progress_bar.refresh_rate=0 \
        "hydra.sweep.dir=$LOGS/sweep"
fi

TB_PID=
stop_tensorboard() { [[ -z $TB_PID ]] || { kill "$TB_PID" 2>/dev/null || true; wait "$TB_PID" 2>/dev/null || true; }; TB_PID=; }
trap stop_tensorboard EXIT

# shoot <logdir> <prefix> <page> [<page> ...]; a page is <name>=<plugin>:<width>x<height>
shoot() {
    local logdir=$1 prefix=$2
    shift 2
    "$TENSORBOARD" --logdir "$logdir" --port "$PORT" --host localhost >"$LOGS/tensorboard_$prefix.log" 2>&1 &
    TB_PID=$!
    for _ in $(seq 60); do  # until the server lists the runs
        curl -sf "http://localhost:$PORT/data/runs" | grep -q . && break
        sleep 1
    done
    for page in "$@"; do
        local name=${page%%=*} spec=${page#*=}
        local plugin=${spec%%:*} size=${spec#*:}
        local png="$OUT/${prefix}_$name.png"
        "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
            --window-size="${size/x/,}" --virtual-time-budget=15000 \
            --screenshot="$png" "http://localhost:$PORT/#$plugin" 2>/dev/null
        "$PY" -c 'import sys; from PIL import Image
p = sys.argv[1]; Image.open(p).convert("RGB").quantize(256).save(p, optimize=True)' "$png"
        echo "$png ($(($(stat -c %s "$png") / 1024)) KB)"
    done
    stop_tensorboard
}

shoot "$LOGS/run" run custom_scalars=custom_scalars:1400x1250 time_series=timeseries:1400x900 \
    scalars=scalars:1400x900 images=images:1400x1000 hparams=hparams:1900x500
shoot "$LOGS/sweep" sweep custom_scalars=custom_scalars:1400x1250 hparams=hparams:1900x500
