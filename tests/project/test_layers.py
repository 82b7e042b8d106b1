"""The layers are kept by tests, not by discipline.

* The import contracts in ``pyproject.toml`` ([tool.importlinter]) hold:
  the domain imports nothing of paysim but itself; the service layer imports
  no adapter, entrypoint or config; delivery and the adapters never import the
  entrypoints; only the developer benchmarks import the developer benchmarks
  (they are not shipped); private modules stay inside their package.
* They bite: a copy of the package with one forbidden import added per
  contract breaks exactly those contracts.
* The tooling (``paysim bench``, ``paysim chaos``, the developer benchmarks)
  uses only public names of the runtime and of each other: no ``_name`` is
  imported from, or read off, another paysim module.
* Every domain error maps to a gRPC status in the edge's table.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
TOOLING = ("paysim/benchmarks", "paysim/chaos", "paysim/loadgen")
GENERATED = "paysim._proto"  # generated code: imported as is, everywhere


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``cwd`` (its own pyproject.toml)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}  # no wrapped lines
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


# One forbidden import per contract: (file, line to add, the contract it breaks).
VIOLATIONS = [
    ("paysim/domain/state.py", "import paysim.config", "The domain imports nothing"),
    ("paysim/errors.py", "import paysim.observability.metrics", "The domain imports nothing"),
    ("paysim/service.py", "import paysim.adapters.memory_store", "The service layer imports"),
    ("paysim/simulator.py", "import paysim.entrypoints.http", "The service layer imports"),
    ("paysim/outbox.py", "import paysim.delivery.webhook_dispatcher", "The service layer imports"),
    ("paysim/idempotency.py", "import paysim.config", "The service layer imports"),
    ("paysim/delivery/signing.py", "import paysim.entrypoints.http", "Delivery and the adapters"),
    ("paysim/adapters/aws.py", "import paysim.entrypoints.grpc", "Delivery and the adapters"),
    ("paysim/chaos/summary.py", "import paysim.benchmarks.delivery", "Only the developer"),
    ("paysim/cli.py", "import paysim.benchmarks.h2load", "Only the developer"),
]


def test_a_forbidden_import_breaks_its_contract(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "paysim", tmp_path / "paysim", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert lint_imports(tmp_path).returncode == 0, "the copy is clean before the change"
    for path, line, _ in VIOLATIONS:
        target = tmp_path / path
        target.write_text(target.read_text() + f"\n{line}  # a forbidden import\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    for path, line, contract in VIOLATIONS:
        assert any(b.startswith(contract) for b in broken), (path, line, result.stdout)
        module = path.removesuffix(".py").replace("/", ".")
        assert f"{module} -> {line.removeprefix('import ')}" in result.stdout, result.stdout
    assert f"{len({c for _, _, c in VIOLATIONS})} broken" in result.stdout


def private_uses(path: Path) -> list[str]:
    """Private names of other paysim modules that ``path`` imports or reads."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    modules: set[str] = set()  # local names bound to paysim modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paysim"):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{node.module}.{alias.name}" != GENERATED:
                    found.append(f"from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("paysim"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("package", TOOLING)
def test_tooling_uses_only_public_names(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in sorted((ROOT / package).rglob("*.py"))
        if (uses := private_uses(path))
    }
    assert offenders == {}


def test_the_public_names_check_sees_a_private_import(tmp_path: Path) -> None:
    module = tmp_path / "tool.py"
    module.write_text(
        "from paysim.devstack import DEV_CREDENTIALS, _wait_port\n"
        "from paysim.benchmarks import h2load\n"
        "from paysim._proto.proto.payment.v1 import payment_pb2\n"
        "h2load._measure(); h2load.__name__\n"
    )
    assert private_uses(module) == ["from paysim.devstack import _wait_port", "h2load._measure"]
