"""Imports flow one way: read every module's imports from its source and check the layering.

    edgekd (root: errors, fileio)  <-  models  <-  export  <-  pipeline  <-  edgekd.api (the public API)
                                   <-  bench (torch-free; its agent package imports only edgekd.errors
                                              and edgekd.fileio besides itself: agent.pyz ships those)

`import edgekd` reaches the API lazily (edgekd.__getattr__), and the CLI calls it.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgekd": ROOT / "edgekd", "edgekd.pipeline": ROOT / "pipeline", "edgekd.export": ROOT / "export",
            "edgekd.bench": ROOT / "bench", "edgekd.models": ROOT / "models"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if package == "edgekd" and path.parent != folder:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # `if TYPE_CHECKING:` blocks never run
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


API = "edgekd.api"


def _layer(module: str) -> str:
    if module == API:
        return API
    return next((p for p in sorted(PACKAGES, key=len, reverse=True) if module == p or module.startswith(p + ".")), "")


ALLOWED = {  # layer -> edgekd layers it may import
    "edgekd": {"edgekd", API},  # only the lazy facade in edgekd/__init__.py
    API: set(PACKAGES) | {API},
    "edgekd.models": {"edgekd", "edgekd.models"},
    "edgekd.bench": {"edgekd", "edgekd.bench"},
    "edgekd.export": {"edgekd", "edgekd.export", "edgekd.bench", "edgekd.models"},
    "edgekd.pipeline": set(PACKAGES) | {API},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    layer = _layer(module)
    ours = {m for m in _imports(MODULES[module], module_level_only=False) if m.split(".")[0] == "edgekd"}
    bad = sorted(m for m in ours if _layer(m) not in ALLOWED[layer])
    assert not bad, f"{module} ({layer}) imports {bad}; allowed: {sorted(ALLOWED[layer])}"
    if layer == "edgekd.bench":
        assert not {m for m in _imports(MODULES[module], True) if m.split(".")[0] == "torch"}, \
            f"{module} imports torch at module level; bench/ runs on devices without it"


AGENT = sorted(m for m in MODULES if m == "edgekd.bench.agent" or m.startswith("edgekd.bench.agent."))
SHIPPED_WITH_AGENT = {"edgekd", "edgekd.errors", "edgekd.fileio"}  # what agent.pyz holds besides the agent


@pytest.mark.parametrize("module", AGENT + sorted(SHIPPED_WITH_AGENT))
def test_the_agent_needs_only_what_its_zipapp_holds(module):
    """Anywhere in the file, not only at module level: the standard library, numpy, the runtimes it
    names, and of edgekd only the agent and the modules agent.pyz ships with it."""
    imported = _imports(MODULES[module], module_level_only=False)
    ours = {m for m in imported if m.split(".")[0] == "edgekd"}
    assert ours <= set(AGENT) | SHIPPED_WITH_AGENT, sorted(ours - set(AGENT) - SHIPPED_WITH_AGENT)
    outside = {m.split(".")[0] for m in imported} - set(sys.stdlib_module_names) - {"edgekd", "numpy"}
    # the runtimes themselves; LiteRT's packages and torch (ExecuTorch's tensors) are imported by name, inside Runner
    assert outside <= {"onnxruntime", "executorch"}, outside
    if module == "edgekd":
        assert not _imports(MODULES[module], module_level_only=True), "edgekd/__init__.py imports nothing at load"


def test_the_agent_zipapp_holds_every_agent_module():
    from edgekd.bench.agent import pyz

    members = pyz.members()
    held = {name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for name in members if name.endswith(".py")}
    assert held == set(AGENT) | SHIPPED_WITH_AGENT | {"edgekd.bench", "__main__"}
    # and the one file that is not Python: the source the agent compiles its torch-free ExecuTorch runner from
    assert [name for name in members if not name.endswith(".py")] == ["edgekd/bench/agent/runtimes/pte_native.cpp"]


BENCH = sorted(m for m in MODULES if _layer(m) == "edgekd.bench" and not m.endswith("__main__"))  # __main__ runs


@pytest.mark.parametrize("module", BENCH)
def test_a_bench_module_alone_pulls_in_no_torch_pipeline_or_export(module):
    """Each in a fresh interpreter: what importing it really loads, transitively, not what its source names."""
    code = (f"import sys, importlib\nimportlib.import_module({module!r})\n"
            "bad = [m for m in sys.modules\n"
            "       if m == 'torch' or m.startswith(('torch.', 'edgekd.pipeline', 'edgekd.export'))]\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_import_cycles_at_module_level():
    graph = {m: {i for i in _imports(p, True) if i in MODULES} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = 2
    for module in sorted(graph):
        visit(module, [])


def test_every_module_is_found():
    assert {"edgekd.pipeline.cli", "edgekd.pipeline.stages.student", "edgekd.export.driver", "edgekd.bench.agent",
            "edgekd.bench.targets", "edgekd.models.registry", "edgekd.errors"} <= set(MODULES)


def test_pyproject_lists_every_package():
    """A wheel holds only the listed packages: a sub-package missing there imports from a checkout and
    fails after `pip install .`."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setup["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert sorted(setup["packages"]) == sorted(found)
