#!/usr/bin/env bash
# Stop the one-node SLURM of .ci/slurm-up.sh, by PID file (never by name), and wait until
# its daemons are gone (their ports are then free for the next start).
ROOT=${BSW_SLURM_ROOT:-/tmp/bsw-slurm}
pids=()
for pidfile in "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid" "$ROOT/munge/munged.pid"; do
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  kill "$pid" 2>/dev/null && pids+=("$pid")
done
for _ in $(seq 40); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.25
done
for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
exit 0
