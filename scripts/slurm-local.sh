#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/apply/test_slurm.py.
#
#   scripts/slurm-local.sh start    install (apt-get, as root) and start munged,
#                                   slurmctld and slurmd; nothing to do when the
#                                   cluster already answers
#   scripts/slurm-local.sh stop     stop the daemons this script started, and
#                                   only those (their pid files are kept in
#                                   $STATE_DIR while they run)
#   scripts/slurm-local.sh status   what runs, what this script started
#
# No systemd needed: the daemons are started directly (daemon mode), munged as
# the munge user, slurmctld and slurmd as root. The configuration is Debian's
# path, /etc/slurm/slurm.conf, generated from `nproc`, `free -m` and
# `hostname -s`: one node, one default partition, ProctrackType=linuxproc and
# TaskPlugin=task/none (no cgroups), no accounting database. A slurm.conf this
# script did not write is never overwritten.
#
# Exit codes: 0 done (or already running); 5 not root (start/stop);
# 1 installing or starting failed, with the reason on stderr and in
# $STATE_DIR/why (the Slurm tests put it in their skip reason).
set -uo pipefail

STATE_DIR=${AIMMAT_SLURM_STATE:-/run/aimmat-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by aimmat scripts/slurm-local.sh"
PARTITION=local
SPOOL=/var/spool/slurmd
STATE_SAVE=/var/spool/slurmctld
LOG_DIR=/var/log/slurm
PACKAGES=(slurm-wlm munge)

say() { echo "slurm-local: $*"; }
fail() {
    echo "slurm-local: $*" >&2
    mkdir -p "$STATE_DIR" 2>/dev/null && echo "$*" >"$STATE_DIR/why" 2>/dev/null
    exit 1
}
need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-local: the one-node Slurm cluster is installed and started as root (apt-get, munged, slurmctld, slurmd): sudo make slurm" >&2
        exit 5
    fi
}

# ------------------------------------------------------------------ probes
cluster_up() {
    # slurmctld answers and the node is usable (idle, mix or allocated)
    command -v scontrol >/dev/null && command -v sinfo >/dev/null || return 1
    timeout 10 scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    timeout 10 sinfo -h -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc|comp)'
}
munge_ok() { command -v munge >/dev/null && timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }
# pid of a running process named $2 read from pid file $1, else empty
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}
# a process named $1 runs (a /proc scan: pgrep is procps, not always installed)
running() {
    local c
    for c in /proc/[0-9]*/comm; do
        [ "$(cat "$c" 2>/dev/null)" = "$1" ] && return 0
    done
    return 1
}

# ------------------------------------------------------------------ install
install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || fail "slurmctld/slurmd/munged are missing and there is no apt-get to install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (apt-get)"
    apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed"
    # no recommends: they add a dozen plugin packages (hdf5, rrd, influxdb...) a test cluster never loads
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
        || fail "apt-get install ${PACKAGES[*]} failed"
    command -v slurmctld >/dev/null || fail "slurmctld still missing after apt-get install ${PACKAGES[*]}"
}

# ------------------------------------------------------------------ config
write_conf() {
    if [ -e "$CONF" ] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
        fail "$CONF exists and was not written by this script: not overwriting it (move it away, or start that cluster yourself)"
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # free -m's total (MiB), or the same number from /proc/meminfo where procps is missing
    mem=$(free -m 2>/dev/null | awk '/^Mem:/ {print $2}')
    [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # slurmd drains a node that has less memory than declared: never declare more than it counts
    local seen
    seen=$(slurmd -C 2>/dev/null | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)
    if [ -n "$seen" ] && [ "$seen" -lt "$mem" ]; then mem=$seen; fi
    [ -n "$host" ] && [ "$cpus" -ge 1 ] && [ "$mem" -ge 1 ] || fail "could not read hostname/nproc/free"
    mkdir -p /etc/slurm "$SPOOL" "$STATE_SAVE" "$LOG_DIR"
    cat >"$CONF.tmp" <<EOF
$MARK: a one-node test cluster
# ($cpus CPUs from nproc, ${mem} MB from free -m, node name from hostname -s)
ClusterName=aimmat-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=$SPOOL
StateSaveLocation=$STATE_SAVE
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

# ------------------------------------------------------------------ daemons
start_munged() {
    if munge_ok; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 || fail "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || fail "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
    say "munged started (pid $(cat "$STATE_DIR/munged.pid"))"
}

start_slurm_daemon() {  # $1 slurmctld|slurmd, $2... extra options
    local name=$1 pid
    shift
    if running "$name"; then
        say "$name already running (not started here; left alone)"
        return 0
    fi
    "/usr/sbin/$name" "$@" >>"$LOG_DIR/$name.out" 2>&1 || fail "$name did not start (see $LOG_DIR/$name.log, $LOG_DIR/$name.out)"
    for _ in $(seq 50); do pid=$(live_pid "/run/$name.pid" "$name") && break; sleep 0.1; done
    [ -n "${pid:-}" ] || fail "$name exited right after starting (see $LOG_DIR/$name.log)"
    echo "$pid" >"$STATE_DIR/$name.pid"
    say "$name started (pid $pid)"
}

start() {
    need_root
    if cluster_up; then
        say "already running: $(sinfo -h -o '%P %D node(s) %t %c CPUs %m MB' | head -n1)"
        return 0
    fi
    mkdir -p "$STATE_DIR"
    rm -f "$STATE_DIR/why"
    install
    running slurmctld || running slurmd || write_conf
    start_munged
    start_slurm_daemon slurmctld
    start_slurm_daemon slurmd -N "$(hostname -s)"
    local state=""
    for i in $(seq 60); do
        state=$(timeout 10 sinfo -h -o %t 2>/dev/null | head -n1)
        case $state in
            idle|mix|alloc*|comp*) break ;;
            down*|drain*|drng*)
                # state saved by an earlier run: give the node back to the scheduler
                [ "$i" -ge 5 ] && scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 ;;
        esac
        sleep 0.5
    done
    case $state in
        idle|mix|alloc*|comp*) ;;
        *) fail "the node did not come up (sinfo: '${state:-no answer}'; $(scontrol show node 2>/dev/null | grep -o 'Reason=.*' | head -n1); see $LOG_DIR/slurmctld.log)" ;;
    esac
    local host
    host=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || fail "srun hostname failed: $host"
    say "up: $(sinfo -h -o 'partition %P, %D node %N %t, %c CPUs, %m MB' | head -n1); srun hostname -> $host"
}

stop_one() {  # $1 name; stops it only if this script started it
    local name=$1 pid
    [ -e "$STATE_DIR/$name.pid" ] || return 0
    if pid=$(live_pid "$STATE_DIR/$name.pid" "$name"); then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null; fi
        say "$name stopped (pid $pid)"
    else
        say "$name: pid file $STATE_DIR/$name.pid names no running $name (already gone)"
    fi
    rm -f "$STATE_DIR/$name.pid"
}

stop() {
    need_root
    if ! ls "$STATE_DIR"/*.pid >/dev/null 2>&1; then
        say "nothing started here to stop"
        return 0
    fi
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
}

status() {
    local name pid
    for name in munged slurmctld slurmd; do
        if pid=$(live_pid "$STATE_DIR/$name.pid" "$name"); then
            echo "$name: running, pid $pid (started by this script)"
        elif running "$name"; then
            echo "$name: running (not started by this script)"
        else
            echo "$name: not running"
        fi
    done
    if cluster_up; then
        sinfo
        return 0
    fi
    [ -s "$STATE_DIR/why" ] && echo "last start failed: $(cat "$STATE_DIR/why")"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
