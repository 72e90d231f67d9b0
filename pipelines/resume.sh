# Sourced by the pipeline scripts: rerunning a script after an interruption continues it.
# extract and fit-svd continue from their last shard by themselves; train-student and
# transfer --mode finetune refuse an --out that holds an interrupted run unless given
# --resume, which `resume DIR` prints (nothing when DIR holds no checkpoint). A finished
# stage is skipped by the command itself ("already trained", "already done").
resume() {
  if [ -n "$(find "$1" -name checkpoint.pt 2>/dev/null | head -n 1)" ]; then
    echo "[$(date +%H:%M:%S)] resuming the interrupted run in $1" >&2
    echo --resume
  fi
}
