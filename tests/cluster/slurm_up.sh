#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this host, without systemd, for the tests.
#
#   bash tests/cluster/slurm_up.sh          # install if missing, configure, start, wait for idle
#   bash tests/cluster/slurm_up.sh --stop   # stop the daemons this script started and remove
#                                           # the slurm.conf it wrote
#
# Installs slurmctld, slurmd, slurm-client and munge from Debian when they are missing (needs
# root), writes a minimal /etc/slurm/slurm.conf for this host (1 node, no accounting database,
# no cgroups), starts munged, slurmctld and slurmd directly and waits until `sinfo` shows the
# node idle. Idempotent: a cluster that is already up is left as it is. It refuses to touch an
# /etc/slurm/slurm.conf that it did not write.
#
# Environment: SLURM_UP_MEM_MB (default 20000, capped at 90% of the host's memory),
# SLURM_UP_TIMEOUT_S (default 90), SLURM_UP_STATE (default /var/lib/ecoeval-slurm).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by ecoeval tests/cluster/slurm_up.sh"
STATE=${SLURM_UP_STATE:-/var/lib/ecoeval-slurm}
TIMEOUT_S=${SLURM_UP_TIMEOUT_S:-90}
WANT_MEM_MB=${SLURM_UP_MEM_MB:-20000}

say() { echo "slurm_up: $*" >&2; }
die() { say "error: $*"; exit 1; }

stop_daemons() {
    local name pidfile
    for name in slurmd slurmctld munged; do
        pidfile="$STATE/$name.pid"
        [[ $name == munged ]] && pidfile=/run/munge/munged.pid
        if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")" && say "stopped $name (pid $(cat "$pidfile"))"
        fi
    done
}

if [[ ${1:-} == --stop ]]; then
    stop_daemons
    # A slurm.conf naming a controller that no longer runs makes every `scontrol` wait ~9 s,
    # and snakemake-executor-plugin-slurm runs `scontrol show config` when any Snakemake
    # starts: leaving ours behind would slow every later snakemake call on this host.
    if [[ -e $CONF ]] && grep -qF "$MARKER" "$CONF"; then
        rm -f "$CONF" && say "removed $CONF"
    fi
    exit 0
fi

node_state() { timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true; }

# Already up (by us or by someone else): nothing to do.
if command -v sinfo >/dev/null && [[ $(node_state) == idle || $(node_state) == mixed ]]; then
    say "cluster already up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
    exit 0
fi

# --- install -----------------------------------------------------------------------------
missing=()
for bin in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${bin%%:*}" >/dev/null || missing+=("${bin##*:}")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "packages ${missing[*]} are missing and installing them needs root"
    say "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ $(id -u) == 0 ]] || die "starting slurmd needs root"

# --- configure ---------------------------------------------------------------------------
host=$(hostname -s)
# what slurmd detects on this host, e.g. "NodeName=vm CPUs=2 ... RealMemory=24105"
detected=$(slurmd -C | head -n1)
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$detected")
sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$detected")
cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$detected")
threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$detected")
real_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$detected")
[[ -n $cpus && -n $real_mb ]] || die "could not read CPUs and RealMemory from 'slurmd -C': $detected"
mem_mb=$((real_mb * 9 / 10))
((WANT_MEM_MB < mem_mb)) && mem_mb=$WANT_MEM_MB

if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real cluster's config"
fi
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
cat >"$CONF" <<EOF
$MARKER
# A one-node test cluster: no accounting database, no cgroups, jobs kept 10 min for squeue.
ClusterName=ecoeval
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$host CPUs=$cpus SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
say "wrote $CONF (node $host: $cpus CPUs, $mem_mb MB)"

# --- start -------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n | unmunge >/dev/null || die "munged is not answering"

running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running "$STATE/slurmctld.pid"; then
    scontrol reconfigure || true
else
    slurmctld -c -i  # -c: forget old jobs in the state dir; -i: ignore unreadable state
fi
for _ in $(seq 20); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
running "$STATE/slurmd.pid" || slurmd

deadline=$((SECONDS + TIMEOUT_S))
while ((SECONDS < deadline)); do
    state=$(node_state)
    case $state in
        idle | mixed)
            say "cluster up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
            exit 0
            ;;
        down | drained | draining | drain) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
say "node did not become idle within ${TIMEOUT_S}s (state: ${state:-none}); last log lines:"
tail -n 15 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
exit 1
