# Developer shortcuts. Everything here is also a plain command (see README).
# `just` comes with the dev extra: .venv/bin/just

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv/bin"
image := env("PAYSIM_IMAGE", "paysim:dev")
# The oldest Kubernetes the manifests must work on (tests/project/test_packaging.py pins the same).
k8s_version := "1.31.0"

alias serve := run

# list the recipes
default:
    @{{just_executable()}} --justfile {{justfile()}} --list

# install with the dev extra and run the whole test suite (ruff, mypy, pytest)
test:
    (command -v redis-server && command -v chromedriver || (apt-get update && apt-get install -y redis-server chromium chromium-driver)) && python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest

# the CI entry point, exactly as CI runs it
ci:
    bash .ci/run

# format check, lint and types (the test suite runs these too)
lint:
    {{venv}}/ruff format --check . && {{venv}}/ruff check . && {{venv}}/mypy

# format and lint fixes
fmt:
    {{venv}}/ruff format . && {{venv}}/ruff check --fix .

# regenerate paysim/_proto from proto/
proto:
    {{venv}}/python -m paysim.protogen

# run the API (gRPC :8030, HTTP :8031) with the environment's settings
run:
    {{venv}}/paysim serve

# the whole local stack: AWS emulator, API, worker, webhook receiver (needs '.[local]', in '.[dev]' too)
dev:
    {{venv}}/paysim dev

# run the SQS reservation worker (needs PAYMENT_WEBHOOK_QUEUE_URL; HTTP :8040)
worker:
    {{venv}}/paysim worker

# the load generator every user has: paysim bench (ghz-style; see paysim bench --help)
bench *ARGS:
    {{venv}}/paysim bench {{ARGS}}

# developer benchmark: h2load on the gRPC path (needs nghttp2-client; runs from a checkout only)
bench-h2load *ARGS:
    {{venv}}/python -m paysim.benchmarks.h2load {{ARGS}}

# delivery-path benchmark: webhooks and events at a fixed rate
bench-delivery *ARGS:
    {{venv}}/python -m paysim.benchmarks.delivery {{ARGS}}

# chaos scenarios against a running paysim
chaos *ARGS:
    {{venv}}/paysim chaos {{ARGS}}

# build the container image (needs Docker with BuildKit)
docker-build:
    docker build -t {{image}} .

# run the image as Kubernetes does: read-only root, /tmp in memory, non-root
docker-run *ARGS:
    docker run --rm --read-only --tmpfs /tmp -p 8030:8030 -p 8031:8031 {{image}} {{ARGS}}

# validate every manifest (strict schema, pinned Kubernetes version) and lint the Dockerfile, offline
k8s-check:
    #!/usr/bin/env bash
    set -euo pipefail
    # kustomization.yaml is no Kubernetes resource; the patches are full ones.
    # --quiet prints only problems; a WARN (unknown kind or apiVersion) fails too.
    out=$(find k8s -name '*.yaml' ! -name kustomization.yaml -print0 | sort -z \
        | xargs -0 {{venv}}/kubernetes-validate --quiet --strict -k {{k8s_version}}) \
        || { echo "$out"; exit 1; }
    if [ -n "$out" ]; then echo "$out"; exit 1; fi
    {{venv}}/hadolint Dockerfile
    echo "manifests valid for Kubernetes {{k8s_version}}; Dockerfile lint clean"

# remove build output and tool caches (keeps .venv and bench-results)
clean:
    rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
    find . -path ./.venv -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
