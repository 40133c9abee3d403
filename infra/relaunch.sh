# shellcheck shell=bash
# relaunch_after STATUS : what a training VM does once the trainer exited with STATUS; the
# GCE startup script and the EC2 user-data share it. Exit status 0 means training finished:
# returns 1 (leave the relaunch loop). 42 means "preempted after a checkpoint": returns 0 at
# once (run the trainer again; it resumes). Any other status is a failure, most often a peer
# that went away (its VM was preempted or reclaimed): after TP_RETRY_SECONDS it returns 0, so
# the trainer rejoins the cluster once it is whole again, at most TP_MAX_RESTARTS times in a
# row; the next failure ends the script with the trainer's status (fail closed).
trainer_failures=0

relaunch_after() {
  local status=$1
  case $status in
    0)
      log "trainer finished"
      return 1
      ;;
    42)
      log "preempted after a checkpoint: relaunching to resume from it"
      trainer_failures=0
      ;;
    *)
      trainer_failures=$((trainer_failures + 1))
      if ((trainer_failures > TP_MAX_RESTARTS)); then
        log "trainer failed $trainer_failures times in a row (last exit status $status)"
        exit "$status"
      fi
      log "trainer exited with $status; retry $trainer_failures of $TP_MAX_RESTARTS in ${TP_RETRY_SECONDS}s"
      sleep "$TP_RETRY_SECONDS"
      ;;
  esac
}
