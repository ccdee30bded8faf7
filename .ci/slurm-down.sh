#!/usr/bin/env bash
# Stop the one-node SLURM of .ci/slurm-up.sh, by PID file (never by name).
ROOT=${BSW_SLURM_ROOT:-/tmp/bsw-slurm}
for pidfile in "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid" "$ROOT/munge/munged.pid"; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
exit 0
