#!/usr/bin/env bash
# The Swarm stack (docker-stack.yml) up and down on this engine; `make swarm-up` / `make swarm-down` call it.
#
# Usage: scripts/swarm.sh up      swarm init when the engine is in no swarm (remembered in $SWARM_STATE),
#                                 the secrets' files, the three images FROM $BASE_IMAGE, deploy, then wait
#                                 for /readyz on both ports
#        scripts/swarm.sh down    remove the stack, the replica services the LBs created and the network;
#                                 if `up` created the swarm: leave it and remove the docker_gwbridge it made.
#                                 The votes' volume (<stack>_votes-db-data) stays: `docker volume rm` it.
#
# Secrets (files in $SWARM_SECRETS, git-ignored, mode 600; made once, then reused):
#   admin-token        $SWARM_ADMIN_TOKEN when given (written there), else the file's token, else a new one
#   votes-db-password  generated once: the database keeps it in its volume, so keep the file with it
# Only what carries our names or labels is ever removed; nothing is pruned.
#
# Environment (defaults in brackets):
#   SWARM_STACK [chlb]  SWARM_CLUSTER [chlb]  SWARM_LABEL [chlb.replica]  SWARM_NETWORK [chlb-swarm]
#   SWARM_PORT_A [5000]  SWARM_PORT_B [5001]  SWARM_REPLICAS [3]  SWARM_PREFIX [server]
#   SWARM_LB_IMAGE [chlb-lb:latest]  SWARM_REPLICA_IMAGE [chlb-replica:latest]  BASE_IMAGE [python:3.12-slim]
#   SWARM_STATE [.swarm-created]  SWARM_DEADLINE [120]  SWARM_ADVERTISE_ADDR [127.0.0.1]  SWARM_BUILD [1]
#   SWARM_VOTES_DB_IMAGE [chlb-votes-db:latest]  SWARM_SECRETS [.swarm-secrets]  SWARM_ADMIN_TOKEN []
#   SWARM_DRAIN_TIMEOUT [10]  SWARM_BUILD_REPLICA [1] (0: run $SWARM_REPLICA_IMAGE as it is, e.g. your own)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${SWARM_STACK:-chlb}
CLUSTER=${SWARM_CLUSTER:-chlb}
LABEL=${SWARM_LABEL:-chlb.replica}
NETWORK=${SWARM_NETWORK:-chlb-swarm}
PORT_A=${SWARM_PORT_A:-5000}
PORT_B=${SWARM_PORT_B:-5001}
STATE=${SWARM_STATE:-$ROOT/.swarm-created}
DEADLINE=${SWARM_DEADLINE:-120}
LB_IMAGE=${SWARM_LB_IMAGE:-chlb-lb:latest}
REPLICA_IMAGE=${SWARM_REPLICA_IMAGE:-chlb-replica:latest}
VOTES_DB_IMAGE=${SWARM_VOTES_DB_IMAGE:-chlb-votes-db:latest}
SECRETS=${SWARM_SECRETS:-$ROOT/.swarm-secrets}

say() { printf 'swarm: %s\n' "$*" >&2; }
node_state() { docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unreachable; }
network_exists() { docker network ls --format '{{.Name}}' | grep -qxF "$1"; }
our_services() { docker service ls -q --filter "label=$LABEL=$CLUSTER"; }
stack_services() { docker service ls -q --filter "label=com.docker.stack.namespace=$STACK"; }
our_containers() {
    docker ps -aq --filter "label=$LABEL=$CLUSTER"
    docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"
}

# Poll `$@` until it succeeds, for at most $DEADLINE seconds.
wait_for() {
    local what=$1 end=$((SECONDS + DEADLINE))
    shift
    until "$@"; do
        if ((SECONDS >= end)); then
            say "error: $what not within ${DEADLINE}s"
            return 1
        fi
        sleep 0.3
    done
}

answers() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }
none_left() { [[ -z $("$@") ]]; }
new_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
digest() { sha256sum "$1" | cut -c1-12; }

# The secrets' files: the given admin token, else the one from an earlier run, else a new one.
write_secrets() {
    mkdir -p "$SECRETS"
    chmod 700 "$SECRETS"
    local token=$SECRETS/admin-token password=$SECRETS/votes-db-password
    if [[ -n ${SWARM_ADMIN_TOKEN:-} ]]; then
        (umask 077 && printf '%s\n' "$SWARM_ADMIN_TOKEN" >"$token")
    elif [[ ! -s $token ]]; then
        (umask 077 && new_secret >"$token")
        say "generated an admin token in $token"
    fi
    if [[ ! -s $password ]]; then
        (umask 077 && new_secret >"$password")
    fi
}
remove_network() { docker network rm "$1" >/dev/null 2>&1; }

up() {
    case $(node_state) in
    inactive)
        local gw=no
        network_exists docker_gwbridge && gw=yes
        docker swarm init --advertise-addr "${SWARM_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
        printf 'created=yes\ngwbridge_existed=%s\n' "$gw" >"$STATE"
        say "initialised a single-node swarm (swarm-down leaves it)"
        ;;
    active)
        if [[ $(docker info -f '{{.Swarm.ControlAvailable}}') != true ]]; then
            say "error: this engine is a swarm worker; run this on a manager"
            exit 1
        fi
        ;;
    *)
        say "error: swarm state '$(node_state)' (no engine, or a swarm in error)"
        exit 1
        ;;
    esac
    if [[ ${SWARM_BUILD:-1} == 1 ]]; then
        local base=${BASE_IMAGE:-python:3.12-slim}
        say "building $REPLICA_IMAGE, $VOTES_DB_IMAGE and $LB_IMAGE FROM $base"
        if [[ ${SWARM_BUILD_REPLICA:-1} == 1 ]]; then
            docker build -q --force-rm -f "$ROOT/Dockerfile.replica" --build-arg "BASE_IMAGE=$base" -t "$REPLICA_IMAGE" "$ROOT" >/dev/null
        fi
        docker build -q --force-rm -f "$ROOT/Dockerfile.votes-db" --build-arg "BASE_IMAGE=$base" -t "$VOTES_DB_IMAGE" "$ROOT" >/dev/null
        docker build -q --force-rm -f "$ROOT/Dockerfile.lb" --build-arg "BASE_IMAGE=$base" -t "$LB_IMAGE" "$ROOT" >/dev/null
    fi
    write_secrets
    CHLB_LB_IMAGE=$LB_IMAGE CHLB_REPLICA_IMAGE=$REPLICA_IMAGE CHLB_LABEL=$LABEL CHLB_CLUSTER=$CLUSTER \
        CHLB_SWARM_NETWORK=$NETWORK CHLB_PORT_A=$PORT_A CHLB_PORT_B=$PORT_B \
        CHLB_REPLICAS=${SWARM_REPLICAS:-3} CHLB_REPLICA_PREFIX=${SWARM_PREFIX:-server} \
        CHLB_VOTES_DB_IMAGE=$VOTES_DB_IMAGE CHLB_STACK=$STACK CHLB_DRAIN_TIMEOUT=${SWARM_DRAIN_TIMEOUT:-10} \
        CHLB_ADMIN_TOKEN_FILE=$SECRETS/admin-token CHLB_ADMIN_TOKEN_ID=$(digest "$SECRETS/admin-token") \
        CHLB_VOTES_PASSWORD_FILE=$SECRETS/votes-db-password \
        CHLB_VOTES_PASSWORD_ID=$(digest "$SECRETS/votes-db-password") \
        docker stack deploy --prune -c "$ROOT/docker-stack.yml" "$STACK" >/dev/null
    say "deployed stack $STACK; waiting for /readyz (every replica on the ring) on 127.0.0.1:$PORT_A and :$PORT_B"
    local port
    for port in "$PORT_A" "$PORT_B"; do
        if ! wait_for "/readyz on :$port" answers "http://127.0.0.1:$port/readyz"; then
            docker stack ps --no-trunc "$STACK" >&2 || true
            for svc in $(stack_services); do docker service logs --tail 30 "$svc" >&2 || true; done
            exit 1
        fi
    done
    say "up: http://127.0.0.1:$PORT_A and http://127.0.0.1:$PORT_B (admin token in $SECRETS/admin-token)"
}

down() {
    local state
    state=$(node_state)
    if [[ $state == unreachable ]]; then
        say "no Docker engine answers; nothing to do"
        return 0
    fi
    if [[ $state == active ]]; then
        # The LBs and the replicas together: an LB creates replicas only when it starts (and the stack's
        # are stopping, never starting), so none comes back. Stack rm cannot remove the network while
        # replicas are attached (and says so, failing): the network is removed below.
        if [[ -n $(stack_services) ]]; then docker stack rm "$STACK" >/dev/null 2>&1 || true; fi
        local services
        services=$(our_services)
        if [[ -n $services ]]; then
            # shellcheck disable=SC2086  # one id per word
            docker service rm $services >/dev/null
        fi
        # Tasks stop asynchronously (≈ 6 s here): wait until their containers are gone.
        wait_for "the stack's and the replicas' containers to go" none_left our_containers
        if network_exists "$NETWORK"; then
            wait_for "network $NETWORK to be removed" remove_network "$NETWORK"
        fi
    fi
    if [[ -f $STATE ]] && grep -q '^created=yes' "$STATE"; then
        if [[ $state == active ]]; then docker swarm leave --force >/dev/null; fi
        if ! grep -q '^gwbridge_existed=yes' "$STATE" && network_exists docker_gwbridge; then
            docker network rm docker_gwbridge >/dev/null
        fi
        rm -f "$STATE"
        say "left the swarm that swarm-up created"
    fi
    local left
    left=$(our_containers)
    if [[ -n $left ]] || network_exists "$NETWORK"; then
        say "error: still there: containers [$left], network $NETWORK: $(network_exists "$NETWORK" && echo yes || echo no)"
        exit 1
    fi
    say "down: no service, container or network of stack $STACK / cluster $CLUSTER is left"
    if docker volume inspect "${STACK}_votes-db-data" >/dev/null 2>&1; then
        say "kept the votes' volume ${STACK}_votes-db-data (docker volume rm ${STACK}_votes-db-data deletes them)"
    fi
}

case ${1:-} in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
