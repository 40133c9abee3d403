# shellcheck shell=bash
# Body of the EC2 user-data of a training instance (python -m infra.aws train).
# infra/startup_scripts.py prepends `set -euo pipefail`, the TP_* configuration (this
# instance's TP_INDEX included) and tf_config_json (infra/tf_config.sh).
#
# TensorFlow has no s3:// filesystem, so data is staged to local disk and the model dir
# lives on local disk; the chief (task 0) syncs it to S3 every TP_SYNC_SECONDS, after every
# trainer exit and on exit. A relaunched cluster pulls the newest synced checkpoint first.
# AWS credentials come from the instance profile (IMDSv2); none are written anywhere.
#
# Fails closed: any failure logs the failing line and shuts the instance down (it was
# launched with InstanceInitiatedShutdownBehavior=terminate). After each trainer exit the
# chief syncs, then relaunch_after (infra/relaunch.sh) decides: done, run it again (42:
# preempted after a checkpoint), or retry a failure a few times.

log() { echo "tp-user-data: $*"; }

on_error() { log "FAILED at line $1: $2"; }

on_exit() {
  local status=$?
  if [[ -n ${sync_pid:-} ]]; then
    kill "$sync_pid" 2>/dev/null || true
  fi
  sync_up || log "final sync to $TP_S3_MODEL_DIR failed"
  if ((status != 0)); then
    log "exit status $status: failing closed, shutting down"
    shutdown -h now
  elif ((TP_SHUTDOWN_WHEN_DONE)); then
    log "training finished: shutting down"
    shutdown -h now
  fi
}

trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR
trap on_exit EXIT

data_dir=$TP_WORK_DIR/data
model_dir=$TP_WORK_DIR/model
mkdir -p "$data_dir" "$model_dir"

is_chief() { ((TP_INDEX == 0)); }

sync_up() {
  # Only the chief's model dir is the run's; the others hold copies and scratch (.workers/).
  if is_chief && [[ -f $model_dir/checkpoint || -f $model_dir/config.json ]]; then
    aws s3 sync "$model_dir" "$TP_S3_MODEL_DIR" --region "$TP_REGION" \
      --exclude ".workers/*" --only-show-errors
  fi
}

sync_loop() {
  while sleep "$TP_SYNC_SECONDS"; do
    sync_up || log "periodic sync failed; retrying at the next period"
  done
}

install_trainer() {
  case $TP_INSTALL in
    docker)
      if ! command -v docker >/dev/null; then
        log "docker is not installed on this AMI"
        return 1
      fi
      local registry=${TP_IMAGE%%/*}
      if [[ $registry == *.dkr.ecr.*.amazonaws.com ]]; then
        aws ecr get-login-password --region "$TP_REGION" |
          docker login --username AWS --password-stdin "$registry"
      fi
      docker pull --quiet "$TP_IMAGE"
      ;;
    pip)
      local package=$TP_WORK_DIR/${TP_PACKAGE##*/}
      aws s3 cp "$TP_PACKAGE" "$package" --region "$TP_REGION" --only-show-errors
      "$TP_PYTHON" -m venv "$TP_WORK_DIR/venv"
      "$TP_WORK_DIR/venv/bin/pip" install --quiet "$package"
      ;;
    *)
      log "unknown install mode '$TP_INSTALL'"
      return 1
      ;;
  esac
}

stage_data() {
  case $TP_DATA_SOURCE in
    s3://*)
      aws s3 sync "$TP_DATA_SOURCE" "$data_dir" --region "$TP_REGION" --only-show-errors
      ;;
    gs://*)
      if ! command -v gsutil >/dev/null; then
        log "gsutil is needed to stage $TP_DATA_SOURCE"
        return 1
      fi
      gsutil -m -q rsync -r "$TP_DATA_SOURCE" "$data_dir"
      ;;
  esac
  if [[ ! -f $data_dir/$TP_DATA_MARKER ]]; then
    log "$TP_DATA_SOURCE has no $TP_DATA_MARKER: not a finished dataset"
    return 1
  fi
}

imds() {
  local token
  token=$(curl --fail --silent --show-error --retry 5 --request PUT \
    --header "X-aws-ec2-metadata-token-ttl-seconds: 300" "$TP_IMDS_URL/latest/api/token")
  curl --fail --silent --show-error --retry 5 \
    --header "X-aws-ec2-metadata-token: $token" "$TP_IMDS_URL/latest/meta-data/$1"
}

cluster_members() {
  # "tp-index private-ip instance-id" of the cluster's running instances, by tp-index.
  # shellcheck disable=SC2016  # a JMESPath query, not a shell expansion
  aws ec2 describe-instances --region "$TP_REGION" \
    --filters "Name=tag:tp-cluster,Values=$TP_CLUSTER" "Name=instance-state-name,Values=running" \
    --query 'Reservations[].Instances[].[Tags[?Key==`tp-index`]|[0].Value,PrivateIpAddress,InstanceId]' \
    --output text | sort -n
}

wait_for_cluster() {
  # Sets addresses (host:port) and member_ids once tasks 0..N-1 run, each exactly once.
  local waited=0 rows task ip id
  while true; do
    rows=$(cluster_members)
    addresses=()
    member_ids=()
    while read -r task ip id; do
      if [[ -z $task ]]; then
        continue
      fi
      if [[ $task != "${#addresses[@]}" ]]; then
        addresses=()
        break
      fi
      addresses+=("$ip:$TP_WORKER_PORT")
      member_ids+=("$id")
    done <<<"$rows"
    if ((${#addresses[@]} == TP_NUM_NODES && $(grep -c . <<<"$rows") == TP_NUM_NODES)); then
      return 0
    fi
    if ((waited >= TP_CLUSTER_WAIT_SECONDS)); then
      log "the cluster did not reach $TP_NUM_NODES running members in ${waited}s"
      return 1
    fi
    sleep 10
    waited=$((waited + 10))
  done
}

prepare_model_dir() {
  # Every task must restore the same checkpoint. The chief's disk holds the newest (a new
  # chief pulls it from S3 first); it syncs up, then publishes a launch token naming the
  # members. A worker waits for a token that is new to it and names it, then mirrors the
  # chief's model dir from S3. No clocks are compared.
  if is_chief; then
    if [[ ! -f $model_dir/checkpoint ]]; then
      aws s3 sync "$TP_S3_MODEL_DIR" "$model_dir" --region "$TP_REGION" \
        --exclude ".workers/*" --exclude "$TP_LAUNCH_FILE" --only-show-errors
    fi
    sync_up
    echo "$(date +%s)-$RANDOM ${member_ids[*]}" |
      aws s3 cp - "$TP_S3_MODEL_DIR/$TP_LAUNCH_FILE" --region "$TP_REGION" --only-show-errors
    return 0
  fi
  local waited=0 token
  while true; do
    token=$(aws s3 cp "$TP_S3_MODEL_DIR/$TP_LAUNCH_FILE" - --region "$TP_REGION" 2>/dev/null || true)
    if [[ $token != "$last_token" && " $token " == *" $instance_id "* ]]; then
      break
    fi
    if ((waited >= TP_CLUSTER_WAIT_SECONDS)); then
      log "the chief did not publish its checkpoint in ${waited}s"
      return 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
  last_token=$token
  aws s3 sync "$TP_S3_MODEL_DIR" "$model_dir" --region "$TP_REGION" --delete \
    --exclude ".workers/*" --exclude "$TP_LAUNCH_FILE" --only-show-errors
}

run_trainer() {
  local -a args=("--data_dir=$data_dir" "--model_dir=$model_dir" "${TP_TRAINER_ARGS[@]}")
  case $TP_INSTALL in
    docker)
      docker rm --force tp-trainer >/dev/null 2>&1 || true
      # Host network: TF_CONFIG holds this instance's address; host IPC: NCCL's shared memory.
      docker run --rm --name tp-trainer --gpus all --network host --ipc host \
        --user "$(id -u):$(id -g)" --volume "$TP_WORK_DIR:$TP_WORK_DIR" \
        --env TF_CONFIG --env TP_CLOUD=ec2 "$TP_IMAGE" train "${args[@]}"
      ;;
    pip)
      TP_CLOUD=ec2 "$TP_WORK_DIR/venv/bin/python" -m trainer.train "${args[@]}"
      ;;
  esac
}

instance_id=$(imds instance-id)
last_token=""
install_trainer
stage_data
if is_chief; then
  sync_loop &
  sync_pid=$!
fi

while true; do
  wait_for_cluster
  TF_CONFIG=$(tf_config_json "$TP_INDEX" "$TP_LAYOUT" "${addresses[@]}")
  export TF_CONFIG
  log "task $TP_INDEX of $TP_NUM_NODES; TF_CONFIG=$TF_CONFIG"
  prepare_model_dir
  status=0
  run_trainer || status=$?
  sync_up
  relaunch_after "$status" || break
done
