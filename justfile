# Developer shortcuts. Everything here is also a plain command (see README).

venv := ".venv/bin"

# install with the dev extra and run the whole test suite (ruff, mypy, pytest)
test:
    python3 -m venv .venv && {{venv}}/pip install -q -e '.[dev]' && {{venv}}/pytest

# run the service with the environment's settings
serve:
    {{venv}}/paysim serve

# regenerate paysim/_proto from proto/
proto:
    {{venv}}/python -m paysim.protogen

# h2load benchmark against a bare grpc.aio server (needs nghttp2-client)
bench *ARGS:
    {{venv}}/python -m paysim.benchmarks.h2load {{ARGS}}

# format and lint fixes
fmt:
    {{venv}}/ruff format . && {{venv}}/ruff check --fix .
