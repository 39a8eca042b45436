"""The house's rules, checked on the source (docs/ARCHITECTURE.md, "Layout"):

- imports point one way: no import circle between modules, counting imports
  inside functions and under ``TYPE_CHECKING``, and none between the
  packages of the layers (``scheduler`` < ``sim`` < ``planner``; ``tools``,
  ``scheduler`` < ``executor``; the executor's own sub-packages in order);
- the scheduler core imports nothing of the runtime, the simulator or the tools;
- no private name (``_x``) is imported from another package; nothing imports the CLI;
- no module over 500 lines, no folder of more than 16 modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("executor", "scheduler", "sim", "planner", "tools", "benchmarks")
# Each layer may import only layers before it (its own layer excepted).
LAYERS = [
    {"scheduler"},
    {"sim"},
    {"planner"},
    {"tools"},
    {
        "executor.errors",
        "executor.paths",
        "executor.result",
        "executor.telemetry",
        "executor.models",
        "executor.sampling",
    },
    {"executor.fleet"},  # replica plumbing only: actor, handle, pool, health, registry
    {"executor.dispatch"},
    {"executor.agent"},
    {"executor.loop"},
    {"executor.config", "executor.fleet_lifetime", "executor.runtime", "executor.sdk", "executor"},
    {"executor.service", "executor.gateway"},
    {"executor.cli", "executor.__main__"},
    {"benchmarks"},
]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [a.name for a in node.names]
            for n in names:  # ``from pkg import module`` imports the module
                if f"{base}.{n}" in known:
                    yield f"{base}.{n}", []
            yield base, names


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {m for m, _ in imports(name, path, known) if m in known and m != name}
        edges[name] = targets
    return edges


def layer(module: str) -> int:
    best, depth = -1, -1
    for i, members in enumerate(LAYERS):
        for m in members:
            if (module == m or module.startswith(m + ".")) and len(m) > depth:
                best, depth = i, len(m)
    return best


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers() -> None:
    upward = []
    for m, targets in graph().items():
        for t in targets:
            if layer(t) > layer(m):
                upward.append(f"{m} -> {t}")
    assert not upward, "imports against the layers: " + ", ".join(sorted(upward))


def test_no_private_name_crosses_a_package_and_nothing_imports_the_cli() -> None:
    mods = modules()
    known = set(mods)
    bad = []
    for name, path in mods.items():
        home = name.split(".")[0]
        for target, names in imports(name, path, known):
            if target.split(".")[0] in PACKAGES and target.split(".")[0] != home:
                bad += [f"{name}: {target}.{n}" for n in names if n.startswith("_")]
            if (
                target.startswith("executor.cli")
                and not name.startswith("executor.cli")
                and (name != "executor.__main__")
            ):
                bad.append(f"{name} imports the CLI ({target})")
    assert not bad, bad


def test_modules_and_folders_stay_small() -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not too_long, too_long
    folders: dict[Path, int] = {}
    for p in modules().values():
        folders[p.parent] = folders.get(p.parent, 0) + 1
    crowded = {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > 16}
    assert not crowded, crowded


#: pure decision modules: what they may not import (I/O, storage, clocks of their own)
PURE = {
    "executor.loop.machine": (
        "executor.loop.journal",
        "executor.loop.driver",
        "sqlite3",
        "asyncio",
    ),
    "executor.loop.steps": ("executor.loop.journal", "sqlite3", "asyncio"),
    "scheduler": ("asyncio", "ray", "sqlite3", "threading", "time"),
}


def test_pure_modules_import_no_io() -> None:
    mods = modules()
    bad = []
    for name, path in mods.items():
        rule = next((r for m, r in PURE.items() if name == m or name.startswith(m + ".")), None)
        if rule is None:
            continue
        for target, _ in imports(name, path, set(mods)):
            hits = [r for r in rule if target == r or target.startswith(r + ".")]
            bad += [f"{name} -> {target}" for _ in hits[:1]]
    assert not bad, bad


def test_the_fleet_package_is_plumbing_and_tooling_stays_out_of_the_runtime() -> None:
    mods = modules()
    fleet = {n for n in mods if n.startswith("executor.fleet.")}
    assert fleet, "no executor.fleet modules found"
    for name in fleet:
        targets = {t for t, _ in imports(name, mods[name], set(mods))}
        assert not {t for t in targets if t.startswith("executor.dispatch")}, name
    assert not [n for n in mods if n.endswith("local_cluster") and n.startswith("executor")]
    agent = {t for t, _ in imports("executor.agent", mods["executor.agent"], set(mods))}
    assert not {t for t in agent if t.startswith("executor.fleet")}, "Agent imports a wire type"


def test_the_checker_sees_a_circle(tmp_path: Path) -> None:
    """The rules above can fail: two modules that import each other are a circle."""
    a = tmp_path / "a.py"
    a.write_text("import b\n")
    found = list(imports("a", a, {"a", "b"}))
    assert ("b", []) in found
    assert layer("executor.loop.machine") > layer("executor.fleet.registry") > layer("scheduler")


def test_test_modules_have_unique_names() -> None:
    """pytest imports test files by basename (rootdir-relative, no packages):
    two test files of one name anywhere under tests/ stop the whole run at collection."""
    seen: dict[str, list[str]] = {}
    for p in (ROOT / "tests").rglob("test_*.py"):
        seen.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    assert not {n: ps for n, ps in seen.items() if len(ps) > 1}
