#!/usr/bin/env bash
# Issue 14: every GPU claim of litlab in one command that ends inside one 10-minute lease call.
#
# The device call, from the repo root (`run` with carry [".whl", ".gpudata"], timeout_s 600; the
# lease machine has torch 2.11, lightning 2.6.6, torchmetrics, tensorboard, matplotlib and Python
# 3.12, but not the pure-Python packages below; $OUT is the lease's output folder):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
#       .whl/*.whl && PYTHONPATH=/tmp/site:$PWD DATA_DIR=$PWD/.gpudata BUDGET=540 bash scripts/gpu_check.sh
#
# .whl/ (git-ignored, ~2.5 MB) holds the wheels of what the lease machine lacks, made here with
#   pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl/ hydra-core==1.3.8 \
#       omegaconf==2.3.1 annotated-types==0.8.0 pytest==9.2.0 iniconfig==2.3.1 pluggy==1.7.0 \
#       pygments==2.21.0 packaging==26.4
#   pip wheel --no-deps -w .whl/ antlr4-python3-runtime==4.9.3   # an sdist only on PyPI; pure Python
# (hydra-core, omegaconf, antlr4-python3-runtime and annotated-types are litlab's dependencies that
# torch/lightning do not bring; pytest and its own dependencies run `pytest -m gpu`). .gpudata/
# (git-ignored, 21 MB) is `mkdir .gpudata && cp -r ../shared/data/{MNIST,wikitext-2,eng-fra} .gpudata/`.
#
#   SMOKE=1 bash scripts/gpu_check.sh   # the same steps on the CPU, tiny sizes (tests/test_scripts.py)
#
# Steps (timings must not share the GPU, so the first two run alone):
# 1. `pytest -m gpu tests/test_gpu.py` (at most TESTS_S seconds);
# 2. `python -m benchmarks.run --device cuda` (at most BENCH_S): the GPU rows of RESULTS_GPU.md;
# 3. side by side, until the budget's end: the LN-placement sweep (depths 1-32, both placements,
#    3 seeds, plus the warm-up sweep at depth 32: 42 jobs, one multirun per seed and one for the
#    warm-up, timed), `experiment=vae_mlp_seed model.compile=true` (100 epochs, timed), and three
#    jobs sized to the time left: the default LM, `experiment=vae_cnn_deep_likelihood` and
#    `experiment=vae_mlp_likelihood`. Each sized job first runs a probe (its own config, a few
#    hundred steps, one validation, a one-batch test, benchmarks.clock.PhaseTimes), then trains
#    trainer.max_epochs = the epochs that fit (benchmarks.plan; at most its config's epochs), so
#    its cosine ends inside the budget; trainer.max_time guards, and its best checkpoint is tested.
# Every process is killed (`timeout`) at the budget's end; PHASES="long" (or "tests bench") runs
# only those steps (with PHASES=long the LM gets nearly the whole budget); LM_ARGS adds overrides
# to the LM's probe and run (e.g. LM_ARGS="model.compile=true").
#
# Written to OUT (default logs/gpu_check/out): status.txt (machine, every step's exit status and
# seconds), jobs.csv (the same as a table), plan.csv (the sizing of each sized job), pytest_gpu.log
# and .xml, RESULTS_GPU.md and .json (the benchmark), summary.md (the runs' final metrics, the LN
# sweep's wall time), ln_report/ (its figures and CSVs), logs_{lm,vae,ln}.tgz (run folders without
# checkpoints). The run folders themselves are under logs/gpu_check/.
set -u
cd "$(dirname "$0")/.."
LOGS=${LOGS:-logs/gpu_check}
OUT=${OUT:-$LOGS/out}
SMOKE=${SMOKE:-0}
PHASES=${PHASES:-"tests bench long"}
export DATA_DIR=${DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
PY=${PYTHON:-python3}
T0=$(date +%s)

if [[ $SMOKE == 1 ]]; then
    BUDGET=${BUDGET:-1500}
    TESTS_S=${TESTS_S:-400} BENCH_S=${BENCH_S:-400} TAIL_S=30
    DEVICE=(trainer=cpu)
    BENCH=(--device cpu --quick --models vae_mlp --repeats 1)
    TINY=(trainer.limit_train_batches=4 trainer.limit_val_batches=2 trainer.limit_test_batches=2)
    LM_SIZE=(model.d_model=16 model.num_heads=2 model.d_ff=32 model.num_layers=1
        callbacks.grad_probe.init_batches=1 "${TINY[@]}")
    VAE_SIZE=(model.nll_num_samples=10 model.nll_chunk_size=10 data.eval_batch_size=500 "${TINY[@]}")
    COMPILE=("model.compile={backend:aot_eager}" trainer.max_epochs=2 model.nll_num_samples=10
        model.naive_num_samples=10 data.eval_batch_size=500 "${TINY[@]}")
    LN=(trainer.limit_train_batches=3 trainer.limit_val_batches=1 callbacks.grad_probe.init_batches=1
        model.d_model=16 model.d_ff=16)
    DEPTHS=1,2
    PROBE_STEPS=4 PROBE_WARMUP=2 MAX_LM=2 MAX_DEEP=2 MAX_MLP=2
else
    BUDGET=${BUDGET:-540}  # seconds from this script's start to its last process's end
    TESTS_S=${TESTS_S:-180} BENCH_S=${BENCH_S:-180} TAIL_S=25  # caps; both usually end sooner
    DEVICE=(trainer=gpu)
    BENCH=(--device cuda --repeats "${BENCH_REPEATS:-1}")
    TINY=()
    LM_SIZE=()
    VAE_SIZE=(model.nll_chunk_size=25)  # as in the H100 lease (K = 5000 on 1000 images at once)
    COMPILE=(model.compile=true)
    LN=()
    DEPTHS=1,2,4,8,16,32
    # the configs' epochs: conf/model/transformer_lm.yaml, conf/experiment/vae_*_likelihood.yaml
    PROBE_STEPS=200 PROBE_WARMUP=20 MAX_LM=40 MAX_DEEP=200 MAX_MLP=250
fi
DEADLINE=$((T0 + BUDGET - TAIL_S))  # the long jobs end here; the tail summarises and packs
mkdir -p "$LOGS" "$OUT"
: > "$OUT/status.txt"
echo "job,rc,start_s,end_s,wall_s" > "$OUT/jobs.csv"
rm -f "$OUT/plan.csv"

# seconds until the long jobs' deadline, at least 1 (`timeout 0` would mean no limit at all)
left() {
    local s=$((DEADLINE - $(date +%s)))
    echo $((s > 0 ? s : 1))
}

# hms SECONDS: Lightning's trainer.max_time format, DD:HH:MM:SS
hms() {
    printf '00:%02d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60))
}

# timed NAME LIMIT CMD...: CMD with its output in $LOGS/NAME.log, killed after LIMIT seconds;
# its exit status and seconds go to status.txt and jobs.csv.
timed() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout -s KILL "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc wall=$(($(date +%s) - start))s" >> "$OUT/status.txt"
    echo "$name,$rc,$((start - T0)),$(($(date +%s) - T0)),$(($(date +%s) - start))" >> "$OUT/jobs.csv"
    return $rc
}

# run NAME ARGS...: `python train.py ARGS` in its run folder $LOGS/NAME, until the deadline.
run() {
    local name=$1
    shift
    timed "$name" "$(left)" "$PY" train.py "$@" hydra.run.dir="$LOGS/$name"
}

# sweep NAME ARGS...: a Hydra multirun, its jobs under $LOGS/NAME/, until the deadline.
sweep() {
    local name=$1
    shift
    timed "$name" "$(left)" "$PY" train.py -m "$@" hydra.sweep.dir="$LOGS/$name"
}

# sized NAME MAX_EPOCHS VAL_EVERY ARGS...: probe the job, then run it for the epochs that fit in
# the time left (see the header); the probe's timings and the choice go to plan.csv.
sized() {
    local name=$1 max_epochs=$2 val_every=$3 epochs reserve
    shift 3
    run "probe_$name" "$@" trainer.max_epochs=1 trainer.limit_train_batches=$PROBE_STEPS \
        trainer.check_val_every_n_epoch=1 trainer.limit_test_batches=1 \
        callbacks.model_checkpoint=null callbacks.step_checkpoint=null \
        +callbacks.phase_times._target_=benchmarks.clock.PhaseTimes \
        "+callbacks.phase_times.out=$LOGS/probe_$name/phases.json" \
        "+callbacks.phase_times.launched=$(date +%s.%N)" \
        "+callbacks.phase_times.warmup_steps=$PROBE_WARMUP"
    if ! epochs=$("$PY" -m benchmarks.plan "$LOGS/probe_$name/phases.json" "$(left)" \
        --max-epochs "$max_epochs" --val-every "$val_every" --csv "$OUT/plan.csv" --name "$name" \
        2>> "$OUT/status.txt"); then
        echo "$name: no probe timings; not run" >> "$OUT/status.txt"
        return 1
    fi
    # training stops by max_time at the latest, leaving the probe's start-up and test times
    reserve=$(
        "$PY" -c "import json, sys; from benchmarks.plan import phases
p = phases(json.load(open(sys.argv[1]))); print(int(p['start_s'] + p['test_s'] + p['val_s']) + 5)" \
            "$LOGS/probe_$name/phases.json"
    )
    echo "$name: $epochs epochs (of $max_epochs) in $(left) s" >> "$OUT/status.txt"
    run "$name" "$@" trainer.max_epochs="$epochs" \
        "trainer.max_time='$(hms $(($(left) > reserve ? $(left) - reserve : 1)))'" \
        callbacks.step_checkpoint=null +callbacks.model_checkpoint.save_weights_only=true \
        callbacks.model_checkpoint.save_last=false
}

# -- machine ----------------------------------------------------------------------------------
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    "$PY" -c "import sys, torch, lightning, hydra, omegaconf, annotated_types, pytest
print('python', sys.version.split()[0], 'torch', torch.__version__, 'lightning',
      lightning.__version__, 'hydra', hydra.__version__, 'pytest', pytest.__version__,
      'cuda', torch.cuda.is_available())" 2>&1
    echo "budget ${BUDGET}s, phases: $PHASES, smoke: $SMOKE"
} >> "$OUT/status.txt"

# -- 1, 2: alone on the device ------------------------------------------------------------------
if [[ $PHASES == *tests* ]]; then
    timed pytest_gpu "$TESTS_S" "$PY" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q \
        -rs --durations=15 --junitxml="$OUT/pytest_gpu.xml"
    cp "$LOGS/pytest_gpu.log" "$OUT/"
fi
if [[ $PHASES == *bench* ]]; then
    timed bench "$BENCH_S" "$PY" -m benchmarks.run "${BENCH[@]}" --startup-repeats 0 \
        --out "$OUT/RESULTS_GPU.md"
    cp "$LOGS/bench.log" "$OUT/"
fi

# -- 3: the long jobs, side by side -------------------------------------------------------------
if [[ $PHASES == *long* ]]; then
    echo "long jobs: $(left) s" >> "$OUT/status.txt"
    # the LN-placement study, float32 as on the CPU; one multirun per seed, and the warm-up
    # variant at the deepest setting (42 jobs)
    LNS=("${DEVICE[@]}" trainer.precision=32-true callbacks.progress_bar.refresh_rate=0 "${LN[@]}")
    for seed in 0 1 2; do
        sweep "ln_seed$seed" experiment=ln_placement "${LNS[@]}" seed=$seed \
            model.num_layers=$DEPTHS model.norm_first=false,true &
    done
    sweep ln_warmup experiment=ln_placement_warmup "${LNS[@]}" seed=0,1,2 \
        model.num_layers=${DEPTHS##*,} model.norm_first=false,true &
    # report Q9/Q10 with torch.compile, timed over its 100 epochs
    # (trainer.max_time: its test still runs if the 100 epochs do not fit)
    run vae_mlp_seed_compile experiment=vae_mlp_seed "${DEVICE[@]}" "${COMPILE[@]}" \
        callbacks.progress_bar.refresh_rate=0 callbacks.step_checkpoint=null \
        "trainer.max_time='$(hms $(($(left) > 40 ? $(left) - 30 : 1)))'" &
    # the sized jobs
    COMMON=("${DEVICE[@]}" callbacks.progress_bar.refresh_rate=0)
    read -ra LM_EXTRA <<< "${LM_ARGS:-}"  # e.g. LM_ARGS="model.compile=true"
    sized lm "$MAX_LM" 1 model=transformer_lm "${COMMON[@]}" "${LM_SIZE[@]}" "${LM_EXTRA[@]}" &
    sized vae_cnn_deep_likelihood "$MAX_DEEP" 5 experiment=vae_cnn_deep_likelihood \
        "${COMMON[@]}" "${VAE_SIZE[@]}" &
    sized vae_mlp_likelihood "$MAX_MLP" 5 experiment=vae_mlp_likelihood "${COMMON[@]}" \
        "${VAE_SIZE[@]}" &
    wait
    echo "long jobs done after $(($(date +%s) - T0)) s" >> "$OUT/status.txt"
fi

# -- summary and archives -----------------------------------------------------------------------
# summary "NAME ..." COLUMN...: the runs' final metrics (litlab.analysis.run_summary)
summary() {
    local names=$1 runs=()
    shift
    for name in $names; do
        [[ -f $LOGS/$name/metrics.csv ]] && runs+=("$LOGS/$name")
    done
    if ((${#runs[@]})); then
        "$PY" -m litlab.analysis.run_summary "${runs[@]}" --columns "$@" 2>&1
    else
        echo "(no finished run)"
    fi
}
{
    echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - T0)) s"
    echo
    echo '```'
    cat "$OUT/status.txt"
    echo '```'
    if [[ -f $OUT/pytest_gpu.log ]]; then
        echo
        echo "## pytest -m gpu"
        echo
        echo '```'
        tail -n 25 "$OUT/pytest_gpu.log"
        echo '```'
    fi
    if [[ $PHASES == *long* ]]; then
        echo
        echo "## Default LM (test perplexity on non-overlapping windows)"
        echo
        summary lm epoch train/loss val/loss val/ppl test/loss test/ppl time/epoch_s time/fit_s
        echo
        echo "## VAEs (test IS-NLL with K = 5000 for the likelihood runs)"
        echo
        summary "vae_cnn_deep_likelihood vae_mlp_likelihood vae_mlp_seed_compile" epoch train/loss val/loss test/loss test/nll_is time/epoch_s time/fit_s
        echo
        echo "## LN-placement sweep"
        echo
        jobs=$(find "$LOGS"/ln_seed? "$LOGS"/ln_warmup -name metrics.csv 2>/dev/null | wc -l)
        depths=$(($(tr -cd , <<< "$DEPTHS" | wc -c) + 1))
        echo "$jobs job folders with metrics ($((3 * 2 * depths + 6)) planned); wall time of the" \
            "four multiruns side by side, first start to last end:"
        awk -F, '$1 ~ /^ln_/ {if (s == "" || $3 < s) s = $3; if ($4 > e) e = $4}
            END {print (e - s) " s"}' "$OUT/jobs.csv"
    fi
    echo
    echo "## Sizing (plan.csv)"
    echo
    [[ -f $OUT/plan.csv ]] && cat "$OUT/plan.csv"
} > "$OUT/summary.md" 2>&1
if [[ $PHASES == *long* ]]; then
    "$PY" -m litlab.analysis.ln_sweep "$LOGS"/ln_seed? "$LOGS"/ln_warmup --out "$OUT/ln_report" \
        > "$LOGS/ln_report.log" 2>&1 || echo "ln_report failed: $LOGS/ln_report.log" >> "$OUT/summary.md"
    shopt -s nullglob
    for group in lm vae ln; do
        case $group in
            lm) paths=("$LOGS"/probe_lm "$LOGS"/lm "$LOGS"/probe_lm.log "$LOGS"/lm.log) ;;
            vae) paths=("$LOGS"/probe_vae_* "$LOGS"/vae_*) ;;
            ln) paths=("$LOGS"/ln_*) ;;
        esac
        existing=()
        for path in "${paths[@]}"; do [[ -e $path ]] && existing+=("$path"); done
        ((${#existing[@]})) && tar czf "$OUT/logs_$group.tgz" --exclude='*.ckpt' \
            --exclude='*.ckpt.*' "${existing[@]}"
    done
fi
echo "all done after $(($(date +%s) - T0)) s" >> "$OUT/status.txt"
ls -l "$OUT" >> "$OUT/status.txt"
