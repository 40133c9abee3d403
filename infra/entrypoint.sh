#!/usr/bin/env bash
# The training image's entry point: dispatches a command to the project's modules.
#   docker run IMAGE train --data_dir=gs://... --model_dir=gs://... [flags]
# exec: the Python process receives the container's signals (SIGTERM -> checkpoint, exit 42).
set -euo pipefail

usage="usage: entrypoint.sh preprocess|batch_translate|batch_classify|train|translate|classify|export [flags]"
if (($# == 0)); then
  echo "$usage" >&2
  exit 2
fi
command=$1
shift
case $command in
  preprocess) module=pipeline.preprocess ;;
  batch_translate) module=pipeline.batch_translate ;;
  batch_classify) module=pipeline.batch_classify ;;
  train) module=trainer.train ;;
  translate) module=trainer.translate ;;
  classify) module=trainer.classify ;;
  export) module=trainer.export ;;
  -h | --help | help)
    echo "$usage"
    exit 0
    ;;
  *)
    echo "entrypoint.sh: unknown command '$command'; $usage" >&2
    exit 2
    ;;
esac
exec "${PYTHON:-python3}" -m "$module" "$@"
