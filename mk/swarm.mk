# Docker Swarm: two LB instances over one membership held by the engine (docs/scaling-out.md).
#   make swarm-up     engine + swarm init when it is in no swarm (remembered) + images + stack deploy,
#                     then wait for /readyz (every replica on the ring) on 127.0.0.1:$(SWARM_PORT_A) and :$(SWARM_PORT_B)
#   make swarm-down   stack rm, the replica services the LBs created, the network; leaves the swarm
#                     (and removes docker_gwbridge) only if swarm-up created it, and the votes' volume
#                     <stack>_votes-db-data (docker volume rm it to delete the votes)
# Every SWARM_* variable below can be overridden (make swarm-up SWARM_PORT_A=6000); see scripts/swarm.sh.

SWARM_STACK         ?= chlb
SWARM_CLUSTER       ?= chlb
SWARM_LABEL         ?= chlb.replica
SWARM_PREFIX        ?= server
SWARM_NETWORK       ?= chlb-swarm
SWARM_PORT_A        ?= 5000
SWARM_PORT_B        ?= 5001
SWARM_REPLICAS      ?= 3
SWARM_LB_IMAGE      ?= chlb-lb:latest
SWARM_REPLICA_IMAGE ?= chlb-replica:latest
SWARM_VOTES_DB_IMAGE ?= chlb-votes-db:latest
SWARM_STATE         ?= $(CURDIR)/.swarm-created
# The admin token and the database password as files (git-ignored); SWARM_ADMIN_TOKEN= sets the token,
# else the file's is kept, else one is generated. SWARM_DRAIN_TIMEOUT: the LBs' LB_DRAIN_TIMEOUT.
SWARM_SECRETS       ?= $(CURDIR)/.swarm-secrets
SWARM_ADMIN_TOKEN   ?=
SWARM_DRAIN_TIMEOUT ?= 10

export SWARM_STACK SWARM_CLUSTER SWARM_LABEL SWARM_PREFIX SWARM_NETWORK SWARM_PORT_A SWARM_PORT_B SWARM_REPLICAS \
       SWARM_LB_IMAGE SWARM_REPLICA_IMAGE SWARM_VOTES_DB_IMAGE SWARM_STATE SWARM_SECRETS SWARM_ADMIN_TOKEN \
       SWARM_DRAIN_TIMEOUT

.PHONY: swarm-up swarm-down

swarm-up: docker-engine
	@$(pick_base); echo "base image: $$base"; BASE_IMAGE="$$base" scripts/swarm.sh up

swarm-down:
	@scripts/swarm.sh down
