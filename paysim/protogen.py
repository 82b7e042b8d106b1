"""Generate ``paysim/_proto`` from the ``.proto`` files under ``proto/``.

Run from anywhere (the repository root is found from this file's path)::

    python -m paysim.protogen           # (re)write paysim/_proto
    python -m paysim.protogen --check   # exit 1 if paysim/_proto is stale

``grpc_tools.protoc`` runs in-process with the repository root as include path,
so the descriptor names are exactly ``proto/payment/v1/payment.proto`` etc., as
the wire contract requires. It emits ``*_pb2.py`` and ``*_pb2.pyi`` (messages),
``*_pb2_grpc.py`` (stock grpcio stubs) and ``*_grpc.py`` (purerpc stubs). protoc
writes modules named ``proto.…``; they are rewritten to live inside this package
as ``paysim._proto.proto.…`` (``google.protobuf`` imports are left alone), and the
``.pyi`` stubs get a ``# mypy: ignore-errors`` header. Nothing else is changed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "paysim" / "_proto"
PACKAGE = "paysim._proto"

# Paths relative to REPO_ROOT; they become the descriptor (file) names.
PROTO_FILES = (
    "proto/payment/v1/payment.proto",
    "proto/common/v1/types.proto",
    "proto/common/v1/errors.proto",
)

ROOT_INIT = '''"""Generated code: never edit anything in this package by hand.

Made from the files under ``proto/`` by ``paysim/protogen.py``; regenerate with
``python -m paysim.protogen`` (and verify with ``python -m paysim.protogen --check``).
"""
'''

# `from proto.x import y_pb2 as ...` (protoc, grpcio) and `import proto.x.y_pb2 as ...` (purerpc).
_IMPORT_RE = re.compile(r"^(\s*)(from|import) proto\.", re.MULTILINE)
# The module name protoc passes to the builder; it becomes the messages' ``__module__``.
_BUILDER_RE = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')proto\.")
_LEFTOVER_RE = re.compile(r"^\s*(from|import) proto\b", re.MULTILINE)

_IGNORED_DIRS = frozenset({"__pycache__"})

# protoc's .pyi stubs use bare generics (``_Mapping``) that ``mypy --strict`` rejects, and mypy
# reads stubs even under ``follow_imports = skip``; they still provide the message types.
PYI_HEADER = (
    "# mypy: ignore-errors\n# (line added by paysim.protogen: protoc stubs are not strict-clean)\n"
)


def _purerpc_plugin() -> Path:
    """The ``protoc-gen-purerpc`` executable installed next to the running interpreter."""
    bin_dir = Path(sys.executable).parent
    for name in ("protoc-gen-purerpc", "protoc-gen-purerpc.exe"):
        candidate = bin_dir / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"protoc-gen-purerpc not found in {bin_dir} (is purerpc installed?)")


def _run_protoc(raw_dir: Path) -> None:
    include_dir = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{include_dir}",
        f"--python_out={raw_dir}",
        f"--pyi_out={raw_dir}",
        f"--grpc_python_out={raw_dir}",
        f"--plugin=protoc-gen-purerpc={_purerpc_plugin()}",
        f"--purerpc_out={raw_dir}",
        *PROTO_FILES,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")


def _rewrite(text: str, name: str) -> str:
    text = _IMPORT_RE.sub(rf"\1\2 {PACKAGE}.proto.", text)
    text = _BUILDER_RE.sub(rf"\g<1>{PACKAGE}.proto.", text)
    if _LEFTOVER_RE.search(text):
        raise RuntimeError(f"{name}: an import of the top-level 'proto' package was not rewritten")
    if name.endswith(".pyi"):
        text = PYI_HEADER + text
    return text


def generate(out_dir: Path) -> None:
    """Write the complete generated tree (the future ``paysim/_proto``) into ``out_dir``.

    ``out_dir`` must not exist or be empty.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    with tempfile.TemporaryDirectory(prefix="paysim-protogen-") as tmp:
        raw_dir = Path(tmp)
        _run_protoc(raw_dir)
        for src in sorted(p for p in raw_dir.rglob("*") if p.is_file()):
            rel = src.relative_to(raw_dir)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_bytes().decode("utf-8")
            dst.write_bytes(_rewrite(text, rel.as_posix()).encode("utf-8"))
    for directory in sorted({out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())}):
        (directory / "__init__.py").write_bytes(
            ROOT_INIT.encode("utf-8") if directory == out_dir else b""
        )


def _tree(root: Path) -> dict[str, Path]:
    """Files under ``root`` by relative POSIX path, without caches."""
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix != ".pyc"
        and not _IGNORED_DIRS.intersection(p.relative_to(root).parts)
    }


def check(out_dir: Path = OUT_DIR) -> list[str]:
    """Regenerate into a temporary directory and list the files of ``out_dir`` that differ.

    Names are POSIX paths relative to the repository root when ``out_dir`` is inside
    it. An empty list means the committed tree is up to date.
    """
    with tempfile.TemporaryDirectory(prefix="paysim-protogen-check-") as tmp:
        fresh_dir = Path(tmp) / "_proto"
        generate(fresh_dir)
        fresh, current = _tree(fresh_dir), _tree(out_dir)
        differing = [
            name
            for name in sorted(fresh.keys() | current.keys())
            if name not in fresh
            or name not in current
            or fresh[name].read_bytes() != current[name].read_bytes()
        ]
    base = out_dir.resolve()
    prefix = base.relative_to(REPO_ROOT).as_posix() if base.is_relative_to(REPO_ROOT) else str(base)
    return [f"{prefix}/{name}" for name in differing]


def write(out_dir: Path = OUT_DIR) -> None:
    """Replace ``out_dir`` with a freshly generated tree (stale files are removed)."""
    with tempfile.TemporaryDirectory(prefix="paysim-protogen-out-") as tmp:
        fresh_dir = Path(tmp) / "_proto"
        generate(fresh_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(fresh_dir, out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paysim.protogen",
        description="Generate paysim/_proto from proto/*.proto.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed paysim/_proto differs from fresh output",
    )
    args = parser.parse_args(argv)
    if args.check:
        differing = check()
        if differing:
            print("generated code is stale; run `python -m paysim.protogen`. Differing files:")
            for name in differing:
                print(f"  {name}")
            return 1
        print("paysim/_proto is up to date")
        return 0
    write()
    print(f"wrote {OUT_DIR.relative_to(REPO_ROOT).as_posix()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
