#!/usr/bin/env bash
# Make sure a Docker Engine is installed and answering on this host.
# Safe to run repeatedly: does nothing when `docker info` already works.
set -euo pipefail

# The paths are settable only so that tests can run this against a stub engine.
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
PIDFILE=${DOCKERD_PIDFILE:-/var/run/docker.pid}
CONTAINERD_PIDFILE=${CONTAINERD_PIDFILE:-/var/run/docker/containerd/containerd.pid}
TIMEOUT=${DOCKER_START_TIMEOUT:-60}

log() { echo "ensure-docker: $*" >&2; }

# Docker's stats API (the reaper's network and CPU counters) answers with empty numbers when
# /proc/self/cgroup names a cgroup v1 controller that is not mounted (containerd logs "cannot
# find cgroup mount destination"). Some VM images mount only a few: mount the rest. Best effort,
# idempotent, and nothing to do on cgroup v2 or on a host where systemd mounted them all.
mount_cgroup_controllers() {
    local controllers first
    [ "$(id -u)" -eq 0 ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ] || return 0
    while IFS=: read -r _ controllers _; do
        case "$controllers" in "" | name=*) continue ;; esac
        first=${controllers%%,*}
        if grep -Eq -- " - cgroup [^ ]+ ([^ ]*,)?${first}(,|\$)" /proc/self/mountinfo; then
            continue
        fi
        mkdir -p "/sys/fs/cgroup/$controllers" 2>/dev/null || true
        if mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers" 2>/dev/null; then
            log "mounted the cgroup controller(s) $controllers"
        else
            log "could not mount the cgroup controller(s) $controllers: container stats may be empty"
        fi
    done </proc/self/cgroup
}
mount_cgroup_controllers

if docker info >/dev/null 2>&1; then
    log "docker engine already running"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "docker is not reachable and starting it needs root"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q docker.io
    # The package may have started the daemon itself (systemd hosts).
    if docker info >/dev/null 2>&1; then
        log "docker engine running after install"
        exit 0
    fi
fi

# True if pid $1 is a live (non-zombie) process. Where PID 1 does not reap
# orphans, a killed daemon lingers as a zombie that `kill -0` and dockerd's own
# checks still consider alive.
running() {
    [ -n "$1" ] || return 1
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
        "" | Z*) return 1 ;;
    esac
}

# True if pid $2 is a live process named $1 (a pid file's pid may have been reused).
alive() {
    running "$2" && [ "$(ps -o comm= -p "$2")" = "$1" ]
}

# Replace this (sub)shell with "$@", every descriptor above 2 closed. `exec`, so that
# the background job's pid is the daemon's own, which the startup poll below watches.
exec_without_inherited_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
    done
    exec "$@"
}

# Drop pid file $2 unless a live $1 owns it. A SIGKILLed dockerd leaves
# docker.pid behind (the next dockerd refuses to start), and its private
# containerd's pid file makes the next dockerd wait on a dead socket.
clear_stale_pidfile() {
    local pid
    [ -f "$2" ] || return 0
    pid=$(cat "$2" 2>/dev/null || true)
    if alive "$1" "$pid"; then
        return 1
    fi
    log "removing stale $2 (pid '${pid}')"
    rm -f "$2"
}

started_pid=
if ! clear_stale_pidfile dockerd "$PIDFILE"; then
    log "dockerd (pid $(cat "$PIDFILE")) is alive but not answering yet; waiting"
else
    clear_stale_pidfile containerd "$CONTAINERD_PIDFILE" || true
    # Containers (and many CI sandboxes) have no systemd as PID 1, so
    # systemctl cannot work there; fall back to a detached dockerd.
    if [ "$(ps -p 1 -o comm=)" = "systemd" ]; then
        log "starting docker via systemctl"
        systemctl start docker
    else
        log "starting dockerd in the background (log: $LOG)"
        # Only stdin/out/err: an inherited descriptor (a caller's `flock` on a lock file,
        # say) would otherwise be held for as long as the engine runs.
        exec_without_inherited_fds dockerd >"$LOG" 2>&1 </dev/null &
        started_pid=$!
    fi
fi

# Poll rather than sleep a fixed time: startup ranges from <1 s to tens of s.
deadline=$((SECONDS + TIMEOUT))
until docker info >/dev/null 2>&1; do
    # By pid only: until the job's `exec` has run, its name is still this script's.
    if [ -n "$started_pid" ] && ! running "$started_pid"; then
        log "dockerd exited during startup"
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "docker engine did not come up within ${TIMEOUT}s"
        if [ -f "$LOG" ]; then
            tail -n 30 "$LOG" >&2
        else
            journalctl -u docker --no-pager -n 30 >&2 || true
        fi
        exit 1
    fi
    sleep 1
done
log "docker engine is up ($(docker info --format '{{.ServerVersion}} / {{.Driver}}'))"
