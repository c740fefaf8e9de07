"""What newsclf imports: nothing heavy at start-up, no import cycles, only declared third-party packages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "newsclf"

# -- start-up --------------------------------------------------------------------------------------

# module prefixes a help page must not load: each costs seconds, or pulls in what the command never uses
HEAVY = ("torch", "transformers", "datasets", "wandb", "numpy", "requests", "pydantic_settings", "google")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["data", "--help"],
        ["data", "push", "--help"],
        ["config", "--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["predict", "--help"],
        ["models", "--help"],
        ["models", "pull", "--help"],
        ["cloud", "build", "--help"],
        ["cloud", "setup", "--help"],
        ["cloud", "status", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args):
    # a fresh interpreter: this one has imported everything already
    code = (
        "import sys\n"
        "from newsclf.cli import main\n"
        f"rc = main({args!r})\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0].startswith({HEAVY!r}))\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) > 1  # the help page (or the version) came first
    assert out[-1] == "HEAVY="


def test_typer_is_bounded_to_the_versions_the_startup_trick_was_tested_on():
    """newsclf/cli/__init__.py leans on typer internals (what typer.rich_utils imports, TyperGroup's
    help option): a new typer may change them, so pyproject.toml caps typer below the next minor."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"typer\b", d)]
    upper = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert upper, f"typer has no upper bound in pyproject.toml: {spec!r}"
    installed = tuple(int(x) for x in version("typer").split(".")[:2])
    assert installed < (int(upper[1]), int(upper[2])), spec


# -- the import graph ------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: imports that never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports when it runs, at the top or inside functions (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_only(tree)
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import name`: name is a submodule or an attribute; both count as importing pkg.name
            out += [f"{module}.{a.name}" for a in node.names]
    return out


@lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """newsclf module -> the newsclf modules it imports."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for imported in imports_of(path):
            # `from newsclf.cli import app` names the package; `from newsclf.cli import cloud` the submodule
            target = imported if imported in paths else imported.rpartition(".")[0]
            if target in paths and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    for start in sorted(graph):
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        on_path = {start}
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop(0)
            if nxt in on_path:
                path = [n for n, _ in stack]
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                on_path.add(nxt)
    return None


# Edges that close a known cycle, each to be removed by the work named next to it.
ALLOWED_EDGES: set[tuple[str, str]] = set()  # (the Batch sweep rework removed cli/_sweep.py's three)


def test_find_cycle_names_the_modules_in_order():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_function_level_and_relative_imports():
    module = PACKAGE / "cli" / "job.py"
    assert "newsclf.cli._transfer.connect" in imports_of(module)  # imported inside job()
    assert "newsclf.cli._transfer" in import_graph()["newsclf.cli.job"]


def test_no_import_cycles():
    graph = {m: {t for t in targets if (m, t) not in ALLOWED_EDGES} for m, targets in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])} (move what both need into a module of its own)"


def test_allowed_edges_still_exist():
    """An allowed edge that no longer exists is dropped from the list, so it cannot come back unseen."""
    graph = import_graph()
    gone = sorted((a, b) for a, b in ALLOWED_EDGES if b not in graph.get(a, ()))
    assert not gone, f"these imports are gone: drop them from ALLOWED_EDGES: {gone}"


# -- declared dependencies -------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", d)[0]) for d in deps}  # type: ignore[index]


def distribution_of(module: str, top_level: dict[str, list[str]]) -> str | None:
    """The installed distribution that provides `module` (None: not installed, or the standard library).

    Namespace packages (google.*) are shared by many distributions: the one whose files hold the
    module's own directory or file decides.
    """
    from importlib.metadata import distribution

    candidates = top_level.get(module.split(".")[0], [])
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = "/".join(parts[:n])
        for dist in candidates:
            files = distribution(dist).files or []
            if any(str(f).startswith(prefix + "/") or str(f) == prefix + ".py" for f in files):
                return dist
    return None


def third_party_imports() -> dict[str, set[str]]:
    """Top-level-resolved third-party module -> the newsclf files importing it."""
    out: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "newsclf" or top in sys.stdlib_module_names or top == "__future__":
                    continue
                out.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return out


# Imported directly, but installed only because a declared dependency requires them (listed with it):
# to be declared in pyproject.toml (needs the integrator: dependencies are theirs to change), then dropped here.
ARRIVES_WITH: dict[str, str] = {}  # distribution imported directly -> the declared one that brings it


def _requires(dist: str) -> set[str]:
    from importlib.metadata import requires

    return {_normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r)[0]) for r in requires(dist) or []}  # type: ignore[index]


def test_every_third_party_import_is_a_declared_dependency():
    top_level = packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for module, files in sorted(third_party_imports().items()):
        dist = distribution_of(module, top_level)
        name = _normalize(dist or module)
        if name in declared:
            continue
        if name in ARRIVES_WITH and name in _requires(ARRIVES_WITH[name]) and ARRIVES_WITH[name] in declared:
            continue
        undeclared[module] = (dist, sorted(files))
    assert not undeclared, (
        f"imported but not in pyproject.toml's [project].dependencies (module: (distribution, importers)): {undeclared}"
    )


def test_arrives_with_lists_only_undeclared_imports():
    """Once a package in ARRIVES_WITH is declared or no longer imported, its entry goes."""
    top_level = packages_distributions()
    imported = {_normalize(d) for m in third_party_imports() if (d := distribution_of(m, top_level))}
    stale = sorted(n for n in ARRIVES_WITH if n in declared_distributions() or n not in imported)
    assert not stale, f"drop these from ARRIVES_WITH: {stale}"


# -- a thin CLI ------------------------------------------------------------------------------------

# cli/_sweep.py writes sweep records and drives VMs itself: removed by the Batch sweep rework
THICK_CLI = {"newsclf/cli/_sweep.py"}


def test_the_cli_parses_calls_and_renders_only():
    """No bucket writes and no cost arithmetic under newsclf/cli/: the library does them, the CLI shows them."""
    found = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in THICK_CLI:
            continue
        for imported in imports_of(path):
            if re.match(r"newsclf\.cloud\.(compute\.)?prices\b", imported):
                found.append(f"{rel} imports {imported} (cost arithmetic: newsclf/cloud/fleet.py)")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ("blob", "write_json", "write_status", "upload_from_string", "upload_from_filename"):
                    found.append(f"{rel}:{node.lineno} calls {name}() (a bucket write)")
    assert not found, found
