#!/usr/bin/env bash
# Start or stop a throwaway single-node Slurm cluster (slurmctld + slurmd on 127.0.0.1, munge
# authentication) in a scratch folder, for fovea's sharding test. Needs Debian's slurmctld,
# slurmd, slurm-client and munge packages, and root (munge and slurmd run as root here).
#   single_node.sh start DIR   -> prints "export SLURM_CONF=DIR/slurm.conf" when the node is idle
#   single_node.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?scratch folder}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"
if [ "$cmd" = stop ]; then
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  exit 0
fi
for tool in slurmctld slurmd sbatch sinfo munged; do
  command -v "$tool" >/dev/null || { echo "slurm: $tool is not installed" >&2; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "slurm: needs root to run munged and slurmd" >&2; exit 77; }
mkdir -p "$dir/state" "$dir/spool" /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
fi
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  munged --force || { echo "slurm: munged did not start" >&2; exit 77; }
fi
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat > "$conf" <<CONF
ClusterName=fovea-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"
slurmctld -f "$conf" || { echo "slurm: slurmctld did not start (see $dir/slurmctld.log)" >&2; exit 77; }
slurmd -f "$conf" -N localhost || { echo "slurm: slurmd did not start (see $dir/slurmd.log)" >&2; exit 77; }
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.5
done
echo "slurm: the node did not become idle in 30 s: $(sinfo -h 2>&1 | head -3) (logs in $dir)" >&2
exit 77
