#!/usr/bin/env bash
# Start a real one-node SLURM (munge, slurmctld, slurmd; no accounting database) for the
# tests that submit through profiles/slurm-ci. Needs root; installs the Debian packages if
# missing. Facts and gotchas: ../shared/notes/slurm-ci.md. Stop it with .ci/slurm-down.sh.
set -euo pipefail
ROOT=${BSW_SLURM_ROOT:-/tmp/bsw-slurm}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge
fi
# Daemons and job state left by an earlier run at this root (a killed CI, a second run on the
# same machine) would recover its jobs and hold the node busy: stop them, start from nothing.
bash "$(dirname "$0")/slurm-down.sh"
rm -rf "$ROOT"/{state,spool,run,log}
mkdir -p "$ROOT"/{etc,munge,state,spool,log,run}
chmod 755 "$ROOT/munge"  # munged refuses a socket folder without o+x
if [ ! -f "$ROOT/munge/munge.key" ]; then
  dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$ROOT/munge/munge.key"
fi
munged --key-file="$ROOT/munge/munge.key" --socket="$ROOT/munge/munge.socket" \
  --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/log/munged.log" \
  --seed-file="$ROOT/munge/munged.seed"
host=$(hostname -s)
memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
cat > "$ROOT/etc/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$ROOT/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# The jobstep plugin drops SLURM_CONF before its inner srun: the config must be the default one.
mkdir -p /etc/slurm && cp "$ROOT/etc/slurm.conf" /etc/slurm/slurm.conf
slurmctld -D -c -i > "$ROOT/log/slurmctld.out" 2>&1 &
slurmd -D > "$ROOT/log/slurmd.out" 2>&1 &
for _ in $(seq 120); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "one-node SLURM up: $(sinfo -h | head -1)"
    exit 0
  fi
  sleep 0.25
done
echo "SLURM did not come up; logs in $ROOT/log" >&2
tail -n 20 "$ROOT"/log/*.log >&2 || true
exit 1
