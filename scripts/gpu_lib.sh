# Shared by the GPU lease scripts (scripts/gpu_*.sh): source it after setting BUDGET and LOGS
# (OUT, where status.txt and the archives go, defaults to LOGS; DATA_DIR to ../shared/data).
# Every process gets its own log in $LOGS and is killed by `timeout` when the budget runs out, so
# the whole script ends inside the lease; each one's exit status and wall time go to status.txt.
T0=$(date +%s)
OUT=${OUT:-$LOGS}
export DATA_DIR=${DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
PY=${PYTHON:-python3}
mkdir -p "$LOGS" "$OUT"

# seconds left of the budget, at least 1 (`timeout 0` would mean no limit at all)
left() {
    local s=$((BUDGET - ($(date +%s) - T0)))
    echo $((s > 0 ? s : 1))
}

# launch NAME ARGS...: train.py ARGS, its output in $LOGS/NAME.log, killed at the budget's end.
launch() {
    local name=$1 start
    shift
    start=$(date +%s)
    timeout -s KILL "$(left)" "$PY" train.py "$@" > "$LOGS/$name.log" 2>&1
    echo "$name rc=$? wall=$(($(date +%s) - start))s" >> "$OUT/status.txt"
}

# hms SECONDS: Lightning's trainer.max_time format, DD:HH:MM:SS
hms() {
    printf '00:%02d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60))
}

# run NAME ARGS...: one run in the background, in its run folder $LOGS/NAME/.
run() {
    local name=$1
    shift
    launch "$name" "$@" hydra.run.dir="$LOGS/$name" &
}

# job NAME TRAIN_SECONDS ARGS...: `run`, with training stopped after TRAIN_SECONDS (Lightning's
# max_time, then test as usual).
job() {
    local name=$1 train_s=$2
    shift 2
    run "$name" "$@" "trainer.max_time='$(hms "$train_s")'"
}

# sweep NAME ARGS...: a Hydra multirun (in the foreground), its jobs under $LOGS/NAME/.
sweep() {
    local name=$1
    shift
    launch "$name" -m "$@" hydra.sweep.dir="$LOGS/$name"
}

# machine facts first in status.txt
device_facts() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/status.txt" 2>&1
    "$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
        >> "$OUT/status.txt" 2>&1
}
