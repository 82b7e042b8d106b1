"""Three house rules of issue 14, kept by a test (an AST walk over ``paysim/``).

* **No module over 450 lines** (generated code, ``paysim/_proto``, aside).
* **No function of the runtime takes more than 6 parameters**: ``self``/``cls``
  are not counted, ``*args`` and ``**kwargs`` count one each. The runtime is
  ``paysim/`` without the generated code and the developer benchmarks
  (``paysim/benchmarks``: tools run from a checkout, not shipped in the wheel).
  Past six, group what belongs together into a small frozen value.
* **No ``isinstance(x, C)`` on a concrete adapter ``C``** (a class defined in a
  ``paysim/adapters`` or ``paysim/delivery`` module; a ``Protocol`` there is a
  port, not counted) outside the package that defines it: callers talk to the
  ports, not to what is behind them. Names are followed through the module's
  imports (aliases, ``module.Class``, a package's re-export, relative imports).

Each check returns its offenders as readable lines, so a failure names them;
each is shown to bite on a small source tree that breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "paysim"
GENERATED = "_proto"  # paysim/_proto: generated, never edited by hand
NOT_RUNTIME = ("benchmarks",)  # developer tools, not in the wheel (rule b only)
ADAPTER_PACKAGES = ("adapters", "delivery")

MAX_LINES = 450
MAX_PARAMETERS = 6


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    """``(dotted name, path)`` of every module under ``root/paysim``, generated code aside."""
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[1:2] == (GENERATED,):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _room(name: str) -> str:
    """The top-level package of ``paysim`` a module is in (``adapters``), or ``""``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def long_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for every module over ``limit`` lines."""
    found = []
    for _, path in modules(root):
        lines = len(path.read_text().splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root).as_posix()}: {lines} lines")
    return found


def parameter_count(args: ast.arguments) -> int:
    """Parameters of a signature: ``self``/``cls`` not counted, ``*a`` and ``**k`` one each."""
    positional = [*args.posonlyargs, *args.args]
    if positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    starred = (args.vararg is not None) + (args.kwarg is not None)
    return len(positional) + len(args.kwonlyargs) + starred


def wide_functions(root: Path, limit: int = MAX_PARAMETERS) -> list[str]:
    """``module:line name (N parameters)`` for every runtime function over ``limit``."""
    found = []
    for name, path in modules(root):
        if _room(name) in NOT_RUNTIME:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                count = parameter_count(node.args)
                if count > limit:
                    label = getattr(node, "name", "<lambda>")
                    found.append(f"{name}:{node.lineno} {label} ({count} parameters)")
    return found


def _package(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _bindings(tree: ast.AST, package: str) -> dict[str, str]:
    """Local names bound by the module's imports (anywhere in it) -> qualified names."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                start = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*start, *([base] if base else [])])
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
    return bound


def _is_protocol(node: ast.ClassDef) -> bool:
    """A port (``typing.Protocol``), not a concrete class."""
    return any(
        (isinstance(b, ast.Name) and b.id == "Protocol")
        or (isinstance(b, ast.Attribute) and b.attr == "Protocol")
        for b in node.bases
    )


def adapter_classes(root: Path) -> dict[str, str]:
    """``{qualified name: defining package}`` of the concrete classes of the adapter packages.

    A class re-exported by its package's ``__init__`` is known by that name too.
    """
    found: dict[str, str] = {}
    packages: list[tuple[str, dict[str, str]]] = []
    for name, path in modules(root):
        if _room(name) not in ADAPTER_PACKAGES:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not _is_protocol(node):
                found[f"{name}.{node.name}"] = _package(name, path)
        if path.name == "__init__.py":
            packages.append((name, _bindings(tree, name)))
    for package, bound in packages:
        for local, qualified in bound.items():
            if qualified in found:
                found.setdefault(f"{package}.{local}", found[qualified])
    return found


def _qualified(node: ast.expr, bound: dict[str, str]) -> str | None:
    """``a.b.C`` for a name or an attribute chain rooted in an imported name."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, bound)
        return f"{base}.{node.attr}" if base else None
    return None


def adapter_isinstance(root: Path) -> list[str]:
    """``module:line isinstance(..., C)`` for an adapter class ``C`` outside its package."""
    classes = adapter_classes(root)
    found = []
    for name, path in modules(root):
        tree = ast.parse(path.read_text(), filename=str(path))
        bound = _bindings(tree, _package(name, path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and len(node.args) == 2
            ):
                continue
            kinds = node.args[1]
            for kind in kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]:
                qualified = _qualified(kind, bound) or ""
                package = classes.get(qualified)
                if package is None or name == package or name.startswith(f"{package}."):
                    continue
                found.append(f"{name}:{node.lineno} isinstance(..., {qualified})")
    return found


def test_no_module_is_over_450_lines() -> None:
    found = long_modules(ROOT)
    assert not found, "modules over 450 lines (split them):\n" + "\n".join(found)


def test_no_runtime_function_takes_more_than_6_parameters() -> None:
    found = wide_functions(ROOT)
    assert not found, "more than 6 parameters (group them in a value):\n" + "\n".join(found)


def test_no_isinstance_on_a_concrete_adapter_outside_its_package() -> None:
    found = adapter_isinstance(ROOT)
    assert not found, "isinstance on a concrete adapter (use the port):\n" + "\n".join(found)


# -- each check bites: a small tree with one violation of each kind ---------------------

BROKEN = {
    "paysim/__init__.py": "",
    "paysim/big.py": "x = 1\n" * 451,
    "paysim/fine.py": "x = 1\n" * 450,
    "paysim/_proto/big_pb2.py": "x = 1\n" * 1000,  # generated: never counted
    "paysim/wide.py": (
        "def seven(a, b, c, d, e, *, f, g): ...\n"
        "def starred(a, b, c, d, *args, **kwargs): ...\n"  # 6: fine
        "class K:\n"
        "    def method(self, a, b, c, d, e, f): ...\n"  # self not counted: fine
        "    @classmethod\n"
        "    def build(cls, a, b, c, d, e, *rest, **more): ...\n"
        "async def seven_too(a, /, b, c, d, e, f, g=1): ...\n"
    ),
    "paysim/benchmarks/__init__.py": "",
    "paysim/benchmarks/tool.py": "def wide(a, b, c, d, e, f, g): ...\n",  # not runtime
    "paysim/_proto/wide_pb2.py": "def wide(a, b, c, d, e, f, g): ...\n",
    "paysim/adapters/__init__.py": "from paysim.adapters.store import MemoryStore\n",
    "paysim/adapters/store.py": (
        "from typing import Protocol\n"
        "class MemoryStore: ...\n"
        "class StorePort(Protocol): ...\n"
        "def own(x): return isinstance(x, MemoryStore)\n"  # its own module: fine
    ),
    "paysim/adapters/other.py": (
        "from .store import MemoryStore\n"
        "def same_package(x): return isinstance(x, MemoryStore)\n"  # its package: fine
    ),
    "paysim/delivery/__init__.py": "class Inline: ...\n",
    "paysim/delivery/sender.py": "class Sender: ...\n",
    "paysim/app.py": (
        "import paysim.delivery.sender\n"
        "from paysim import adapters\n"
        "from paysim.adapters import store as s\n"
        "from paysim.adapters.store import MemoryStore as M, StorePort\n"
        "def a(x): return isinstance(x, M)\n"
        "def b(x): return isinstance(x, (int, s.MemoryStore))\n"
        "def c(x): return isinstance(x, paysim.delivery.sender.Sender)\n"
        "def d(x): return isinstance(x, adapters.MemoryStore)\n"  # the re-export
        "def e(x): return isinstance(x, StorePort)\n"  # a port: fine
        "def f(x): return isinstance(x, int)\n"
        "def h(x): return isinstance(x, paysim.delivery.Inline)\n"
    ),
    "paysim/adapters/uses_delivery.py": (
        "from paysim.delivery.sender import Sender\n"
        "def g(x): return isinstance(x, Sender)\n"  # another package: not fine
    ),
}

EXPECTED = {
    "lines": ["paysim/big.py: 451 lines"],
    "parameters": [
        "paysim.wide:1 seven (7 parameters)",
        "paysim.wide:6 build (7 parameters)",
        "paysim.wide:7 seven_too (7 parameters)",
    ],
    "isinstance": [
        "paysim.adapters.uses_delivery:2 isinstance(..., paysim.delivery.sender.Sender)",
        "paysim.app:11 isinstance(..., paysim.delivery.Inline)",
        "paysim.app:5 isinstance(..., paysim.adapters.store.MemoryStore)",
        "paysim.app:6 isinstance(..., paysim.adapters.store.MemoryStore)",
        "paysim.app:7 isinstance(..., paysim.delivery.sender.Sender)",
        "paysim.app:8 isinstance(..., paysim.adapters.MemoryStore)",
    ],
}
CHECKS = {"lines": long_modules, "parameters": wide_functions, "isinstance": adapter_isinstance}


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    for relative, text in BROKEN.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_each_check_names_exactly_the_offenders(broken_tree: Path, check: str) -> None:
    assert sorted(CHECKS[check](broken_tree)) == EXPECTED[check]


def test_the_benchmarks_are_held_to_the_line_limit(broken_tree: Path) -> None:
    (broken_tree / "paysim/benchmarks/tool.py").write_text("x = 1\n" * 451)
    assert "paysim/benchmarks/tool.py: 451 lines" in long_modules(broken_tree)
