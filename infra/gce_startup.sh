# shellcheck shell=bash
# Body of the Compute Engine startup script of a training VM (python -m infra.gcp vm).
# infra/startup_scripts.py prepends `set -euo pipefail`, the TP_* configuration and
# tf_config_json (infra/tf_config.sh). Every VM of a cluster runs the same script; its
# task index is the VM's metadata attribute tp-index. Data and model dir are gs://, which
# TensorFlow reads and writes directly: nothing is synced.
#
# Fails closed: any failure before or between trainer runs logs the failing line and
# powers the VM off (GPUs stop billing; the boot disk stays for a post-mortem).
# After each trainer exit, relaunch_after (infra/relaunch.sh) decides: done, run it again
# (42: preempted after a checkpoint), or retry a failure a few times.

log() { echo "tp-startup: $*"; }

on_error() { log "FAILED at line $1: $2"; }

on_exit() {
  local status=$?
  if ((status != 0)); then
    log "exit status $status: failing closed, powering off"
    shutdown -h now
  elif ((TP_SHUTDOWN_WHEN_DONE)); then
    log "training finished: powering off"
    shutdown -h now
  fi
}

trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR
trap on_exit EXIT

metadata() {
  curl --fail --silent --show-error --retry 5 --retry-connrefused \
    -H "Metadata-Flavor: Google" "$TP_METADATA_URL/computeMetadata/v1/instance/$1"
}

wait_for_gpus() {
  # Deep Learning VM images install the NVIDIA driver on first boot (install-nvidia-driver).
  local waited=0
  until nvidia-smi --list-gpus >/dev/null 2>&1; do
    if ((waited >= TP_DRIVER_WAIT_SECONDS)); then
      log "no working NVIDIA driver after ${waited}s"
      return 1
    fi
    sleep 10
    waited=$((waited + 10))
  done
  log "$(nvidia-smi --list-gpus | wc -l) GPUs"
}

pull_image() {
  if ! command -v docker >/dev/null; then
    log "docker is not installed on this VM image"
    return 1
  fi
  local registry=${TP_IMAGE%%/*}
  if [[ $registry == *-docker.pkg.dev || $registry == gcr.io || $registry == *.gcr.io ]]; then
    gcloud auth configure-docker "$registry" --quiet
  fi
  docker pull --quiet "$TP_IMAGE"
}

run_trainer() {
  docker rm --force tp-trainer >/dev/null 2>&1 || true
  # Host network: the TF_CONFIG addresses are this VM's; host IPC: NCCL's shared memory.
  docker run --rm --name tp-trainer --gpus all --network host --ipc host \
    --env TF_CONFIG --env TP_CLOUD=gce \
    "$TP_IMAGE" train "--data_dir=$TP_DATA_DIR" "--model_dir=$TP_MODEL_DIR" \
    "${TP_TRAINER_ARGS[@]}"
}

index=$(metadata attributes/tp-index)
if ! [[ $index =~ ^[0-9]+$ ]] || ((index >= TP_NUM_NODES)); then
  log "metadata attribute tp-index '$index' is not a task index below $TP_NUM_NODES"
  exit 1
fi
addresses=()
for ((i = 0; i < TP_NUM_NODES; i++)); do
  addresses+=("$TP_CLUSTER-$i.$TP_ZONE.c.$TP_PROJECT.internal:$TP_WORKER_PORT")
done
TF_CONFIG=$(tf_config_json "$index" "$TP_LAYOUT" "${addresses[@]}")
export TF_CONFIG
log "task $index of $TP_NUM_NODES; TF_CONFIG=$TF_CONFIG"

wait_for_gpus
pull_image

while true; do
  log "starting the trainer"
  status=0
  run_trainer || status=$?
  relaunch_after "$status" || break
done
