# syntax=docker/dockerfile:1
# paysim image: `paysim serve` by default (gRPC :8030, HTTP :8031); the worker
# runs the same image with the argument `worker` (HTTP :8040).
#
#   docker build -t paysim:dev .
#   docker run --rm --read-only --tmpfs /tmp -p 8030:8030 -p 8031:8031 paysim:dev
#
# Both stages use the same base image, so the wheels built in the first one
# (including any platform wheels of the dependencies) fit the second.

# ---- build: wheels of paysim and every runtime dependency -------------------
FROM python:3.11-slim-bookworm AS build

WORKDIR /src
# Only what the package build reads (pyproject.toml names README.md as readme);
# the developer benchmarks (paysim/benchmarks) are not in the context (.dockerignore).
COPY pyproject.toml README.md ./
COPY paysim ./paysim
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: the wheels only; no compilers, no build tools, no dev extra ----
FROM python:3.11-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 1001 paysim \
    && useradd --system --uid 1001 --gid 1001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin paysim

# paysim's own wheel, its dependencies from the same directory (--no-index:
# nothing is fetched here). The directory is bind-mounted from the build
# stage, so no wheel lands in a layer of this image. (A path, not a name:
# hadolint DL3013 wants pins, and this is exactly the wheel built above.)
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/paysim-*.whl

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 1001:1001

EXPOSE 8030 8031

# Docker only (Kubernetes uses its own probes). slim has no curl: urllib.
# This checks the API's HTTP port; a worker container (:8040) needs
# --health-cmd or --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8031/health', timeout=2)"]

# Exec form: paysim is PID 1 and receives SIGTERM itself (it handles SIGTERM
# and SIGINT; with `serve --workers N` it forwards them to its workers and
# reaps them itself, so it needs no init either).
ENTRYPOINT ["paysim"]
CMD ["serve"]
