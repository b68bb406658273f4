#!/usr/bin/env bash
# The long runs of issues 2 and 4, as run in one ~9-minute lease of one H100 (see results/vae.md and
# results/transformer_ln.md for what they gave). All jobs share the GPU at once; each has its own run
# folder under logs/gpu/, a wall-clock limit (trainer.max_time, then `timeout`) so that the whole
# script ends inside the lease, and the folder holds its config, metrics.csv, figures and CSVs.
#
#   bash scripts/gpu_session.sh            # on a machine with one GPU, from the repo root
#   SMOKE=1 bash scripts/gpu_session.sh    # the same jobs on CPU with tiny limits (checks the script)
#
# DATA_DIR must hold MNIST/raw and wikitext-2/ (default: ../shared/data). OUT (optional): a folder
# that receives logs_{lm,vae,ln}.tgz (the run folders without checkpoints) and status.txt.
set -u
LOGS=logs/gpu

if [[ ${SMOKE:-0} == 1 ]]; then
    BUDGET=${BUDGET:-900}
    TR=(trainer=cpu)
    TINY=(trainer.limit_train_batches=2 trainer.limit_val_batches=1 trainer.limit_test_batches=1)
    VAE_TINY=("${TINY[@]}" trainer.max_epochs=1 trainer.check_val_every_n_epoch=1 model.nll_num_samples=10)
    LM_TINY=("${TINY[@]}" trainer.max_epochs=1)
    LN_TINY=(trainer.limit_train_batches=12 trainer.limit_val_batches=1 callbacks.grad_probe.init_batches=1)
    DEPTHS=1,2
else
    BUDGET=${BUDGET:-530}  # seconds from start to the last job's end
    TR=(trainer=gpu)
    VAE_TINY=() LM_TINY=() LN_TINY=()
    DEPTHS=1,2,4,8,16,32
fi

source scripts/gpu_lib.sh
device_facts

# Issue 4: the PyTorch tutorial's Transformer (3 epochs), and three candidates for the default LM,
# each 30 epochs of 510 steps (cosine over 15,300 steps): the config as it stands, a smaller
# embedding init (tied weights: U(-0.1, 0.1) makes the untrained model predict its input token), and
# that with a 256-token context and dropout 0.5.
job lm_tutorial 420 model=transformer_tutorial "${TR[@]}" "${LM_TINY[@]}"
# Checkpoints: the best weights only (a full 6 x 512 checkpoint with AdamW state is ~0.4 GB).
LM=(model=transformer_lm "${TR[@]}" trainer.max_epochs=30 model.scheduler.total_steps=15300
    callbacks.step_checkpoint=null callbacks.model_checkpoint.save_last=false
    +callbacks.model_checkpoint.save_weights_only=true)
job lm_default 420 "${LM[@]}" "${LM_TINY[@]}"
job lm_init002 420 "${LM[@]}" model.init_range=0.02 "${LM_TINY[@]}"
job lm_init002_bptt256_drop05 420 "${LM[@]}" model.init_range=0.02 data.batch_size=16 data.bptt=256 \
    data.eval_batch_size=16 model.dropout=0.5 "${LM_TINY[@]}"

# Issue 2: the deep CNN under the likelihood protocol (100 epochs, cosine over 100) and the report's
# CNN for 100 epochs beside the MLP (Q11).
job vae_cnn_deep_likelihood 360 experiment=vae_cnn_deep_likelihood "${TR[@]}" \
    trainer.max_epochs=100 model.nll_chunk_size=25 "${VAE_TINY[@]}"
job vae_cnn_seed 380 experiment=vae_cnn_seed "${TR[@]}" "${VAE_TINY[@]}"

# Issue 4: the LN-placement study, one multirun per seed, float32 (as the CPU sweep).
LN=("${TR[@]}" trainer.precision=32-true callbacks.progress_bar.refresh_rate=0 "${LN_TINY[@]}")
for seed in 0 1 2; do
    sweep "ln_seed$seed" experiment=ln_placement "${LN[@]}" seed=$seed model.num_layers=$DEPTHS model.norm_first=false,true &
done
# Warm-up at the deepest setting (the no-warm-up jobs are in the seed sweeps), then the same pair at
# a 3x larger learning rate.
deepest=${DEPTHS##*,}
LNW=("${LN[@]}" seed=0,1,2 model.num_layers=$deepest model.norm_first=false,true)
(
    sweep ln_warmup "${LNW[@]}" experiment=ln_placement_warmup
    sweep ln_lr3e-3_warmup "${LNW[@]}" experiment=ln_placement_warmup model.optimizer.lr=3e-3
    sweep ln_lr3e-3 "${LNW[@]}" experiment=ln_placement model.optimizer.lr=3e-3
) &

wait
echo "all done after $(($(date +%s) - T0))s" >> "$OUT/status.txt"
for group in lm vae ln; do
    tar czf "$OUT/logs_$group.tgz" --exclude='*.ckpt' "$LOGS"/"$group"_*
done
ls -l "$OUT" >> "$OUT/status.txt"
