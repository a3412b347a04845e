"""Keeps the dependency rules of DESIGN.md section 1 with an AST scan of every import."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)

# Modules a pure core must never touch: they mean I/O, clocks, threads or processes.
IMPURE = {
    "asyncio",
    "time",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "multiprocessing",
    "subprocess",
    "os",
    "io",
    "shutil",
    "tempfile",
    "signal",
    "pathlib",
    "glob",
    "aiofiles",
    "uvloop",
    "datetime",
}


def _imports(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    pkg_parts = path.relative_to(root).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.append((mod, node.lineno))
    return found


def _files(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def _top(mod: str) -> str:
    return mod.split(".")[0]


def _violations(
    package: str, allowed: set[str], banned_prefixes: tuple[str, ...] = (), root: Path = ROOT
) -> list[str]:
    bad = []
    for path in _files(package, root):
        if "codegen" in path.name:
            continue  # the generator runs at build time, never imported at run time
        for mod, line in _imports(path, root):
            top = _top(mod)
            rel = path.relative_to(root)
            if mod.startswith(banned_prefixes) or (top in IMPURE and "stdlib-pure" in allowed):
                bad.append(f"{rel}:{line} imports {mod}")
            elif top in STDLIB or top == "__future__":
                continue
            elif top not in allowed and not any(
                mod == a or mod.startswith(a + ".") for a in allowed
            ):
                bad.append(f"{rel}:{line} imports {mod}")
    return bad


def test_raft_is_pure_stdlib() -> None:
    assert _violations("raft", {"raft", "stdlib-pure"}) == []


def test_protocol_is_sans_io() -> None:
    allowed = {"client.protocol", "crc32c", "cramjam", "stdlib-pure"}
    assert _violations("client/protocol", allowed) == []


def test_storage_has_no_asyncio_or_raft_internals() -> None:
    bad = [
        v
        for v in _violations("storage", {"storage", "crc32c"})
        if " asyncio" in v or " raft" in v or " broker" in v or " client" in v
    ]
    bad += [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in _files("storage")
        for m, line in _imports(p)
        if _top(m) in {"asyncio", "uvloop", "raft", "broker", "client"}
    ]
    assert bad == []


def test_client_uses_only_protocol_and_asyncio() -> None:
    allowed = {"client", "uvloop"}
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in _files("client")
        for m, line in _imports(p)
        if _top(m) in {"broker", "raft", "storage"}
    ]
    assert bad == []
    assert _violations("client", allowed | {"client.protocol", "crc32c", "cramjam"}) == []


def test_broker_reaches_client_only_through_protocol() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in _files("broker")
        for m, line in _imports(p)
        if (m == "client" or m.startswith("client.")) and not m.startswith("client.protocol")
    ]
    assert bad == []


def test_no_package_imports_tests() -> None:
    for package in ("broker", "client", "raft", "storage"):
        for p in _files(package):
            for m, line in _imports(p):
                assert _top(m) != "tests", f"{p}:{line} imports {m}"


@pytest.mark.parametrize("package", ["raft", "client/protocol"])
def test_scanner_catches_impure_import(package: str, tmp_path: Path) -> None:
    """The scan must fail when a pure package imports asyncio: proven on a copy of the tree
    (never on the real one, which other test runs may be scanning at the same time)."""
    shutil.copytree(ROOT / package, tmp_path / package)
    (tmp_path / package / "_planted_for_test.py").write_text("import asyncio\n")
    allowed = {"raft", "stdlib-pure"} if package == "raft" else {"client.protocol", "stdlib-pure"}
    assert _violations(package, allowed, root=tmp_path) != []
