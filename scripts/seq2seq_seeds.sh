#!/usr/bin/env bash
# The Seq2Seq studies with error bars (issue 16.2): every configuration of the EOS, attention and
# teacher-forcing studies trained with one recipe for each seed in SEEDS, the split fixed
# (data.split_seed), the seed varying initialisation and batch order.
#
# RECIPE: the overrides every job starts from. Default: model=seq2seq_attn, today's default (hidden
# 384, bf16, the last weights tested), as results/seq2seq.md's first 3-seed table was measured. Its
# second table, the first pass's recipe (model=seq2seq_attn until 2026-12-02), is
#   RECIPE="model=seq2seq_attn model.hidden_dim=256 model.encoder.embed_dim=256 \
#   model.decoder.embed_dim=256 trainer.precision=32-true test_ckpt=best"
#
#   DATA_DIR=/path/to/data scripts/seq2seq_seeds.sh [LOGS] [JOB ...]
#
# JOB names pick configurations (default: all, in this order): default no_eos attn_none tf0.0
# attn_dot tf0.5 current_rule tutorial. Runs go to LOGS/<job>_seed<seed> (default LOGS:
# logs/seq2seq_seeds); a folder that already exists is skipped (a finished run holds
# test_translations.csv; an unfinished one is reported and left alone), so the script resumes.
# PARALLEL jobs (default 2) run at once, THREADS torch threads each (default 1): on 2 cores, two
# one-thread runs, whose wall times are contended. current_rule (data.keep_period=false) and
# tutorial (model=seq2seq_tutorial, 80 epochs) run with the first seed only. The summary:
# python -m litlab.analysis.seq2seq_runs seeds ... (results/seq2seq.md has the command).
set -euo pipefail
cd "$(dirname "$0")/.."

LOGS=${1:-logs/seq2seq_seeds}
shift || true
JOBS=("$@")
if [[ ${#JOBS[@]} -eq 0 ]]; then
    JOBS=(default no_eos attn_none tf0.0 attn_dot tf0.5 current_rule tutorial)
fi
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:-model=seq2seq_attn}
SEEDS=${SEEDS:-"12345 1 2"}
PARALLEL=${PARALLEL:-2}
THREADS=${THREADS:-1}
: "${DATA_DIR:?set DATA_DIR to the data folder (eng-fra/)}"
export DATA_DIR OMP_NUM_THREADS=$THREADS
mkdir -p "$LOGS"

overrides() {  # the command-line overrides of one job name
    case $1 in
        default) echo "$RECIPE" ;;
        no_eos) echo "$RECIPE data.append_eos=false" ;;
        attn_none) echo "$RECIPE model.attention=none" ;;
        attn_dot) echo "$RECIPE model.attention=dot" ;;
        tf0.0) echo "$RECIPE model.teacher_forcing_ratio=0.0" ;;
        tf0.5) echo "$RECIPE model.teacher_forcing_ratio=0.5" ;;
        current_rule) echo "$RECIPE data.keep_period=false" ;;
        tutorial) echo "model=seq2seq_tutorial" ;;
        *) echo "unknown job '$1' (see the header of $0)" >&2; return 1 ;;
    esac
}

queue=()
for job in "${JOBS[@]}"; do
    args=$(overrides "$job")
    seeds=$SEEDS
    [[ $job == current_rule || $job == tutorial ]] && seeds=${SEEDS%% *}
    for seed in $seeds; do
        dir=$LOGS/${job}_seed$seed
        if [[ -f $dir/test_translations.csv ]]; then
            echo "skip $dir (finished)"
            continue
        elif [[ -e $dir ]]; then
            echo "skip $dir (an unfinished run: remove it to train again)"
            continue
        fi
        queue+=("$args seed=$seed task_name=seq2seq_seeds hydra.run.dir=$dir \
callbacks.progress_bar.refresh_rate=0")
    done
done

if [[ ${#queue[@]} -eq 0 ]]; then
    echo "nothing to train"
    exit 0
fi
printf '%s\n' "${queue[@]}" | xargs -P "$PARALLEL" -I{} sh -c \
    "$PY train.py {} > /dev/null 2>&1 && echo 'done: {}' || echo 'FAILED: {}'"
