# shellcheck shell=bash
# tf_config_json INDEX LAYOUT ADDRESS... : prints TF_CONFIG for task INDEX of the cluster ADDRESS...
# (host:port each, in task order). LAYOUT "worker": every task a worker (worker 0 acts as chief);
# "chief": the first address is the chief, the rest workers (the layout Vertex AI sets).
# The same JSON as trainer.distribution.make_tf_config (tests compare the two).
tf_config_json() {
  local index=$1 layout=$2
  shift 2
  local -a addresses=("$@")
  local n=${#addresses[@]} address
  if ((n == 0)); then
    echo "tf_config_json: a cluster needs at least one address" >&2
    return 1
  fi
  if ! [[ $index =~ ^[0-9]+$ ]] || ((index >= n)); then
    echo "tf_config_json: task index '$index' is outside a cluster of $n" >&2
    return 1
  fi
  for address in "${addresses[@]}"; do
    if ! [[ $address =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]]; then
      echo "tf_config_json: '$address' is not host:port" >&2
      return 1
    fi
  done
  local cluster task
  case $layout in
    worker)
      cluster="\"worker\":$(_tf_config_list "${addresses[@]}")"
      task="{\"type\":\"worker\",\"index\":$index}"
      ;;
    chief)
      cluster="\"chief\":$(_tf_config_list "${addresses[0]}")"
      if ((n > 1)); then
        cluster+=",\"worker\":$(_tf_config_list "${addresses[@]:1}")"
      fi
      if ((index == 0)); then
        task='{"type":"chief","index":0}'
      else
        task="{\"type\":\"worker\",\"index\":$((index - 1))}"
      fi
      ;;
    *)
      echo "tf_config_json: layout must be worker or chief, not '$layout'" >&2
      return 1
      ;;
  esac
  printf '{"cluster":{%s},"task":%s}\n' "$cluster" "$task"
}

_tf_config_list() {
  local out="" address
  for address in "$@"; do
    out+="${out:+,}\"$address\""
  done
  printf '[%s]' "$out"
}
