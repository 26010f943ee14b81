"""The engine never imports streamlit: shared/STYLE.md point 1."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import studio_core

ENGINE = Path(studio_core.__file__).parent


def test_no_engine_module_imports_streamlit_in_its_source():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_importing_every_engine_module_does_not_load_streamlit():
    modules = [m.name for m in pkgutil.walk_packages([str(ENGINE)], "studio_core.")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_studio_side_of_a_job_never_loads_torch():
    """The supervisor, the queue and the app's job calls stay light: training lives in the child process."""
    code = ("import sys\n"
            "import studio_core.jobs, studio_core.runs, studio_core.context, studio_core.workflow\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_cycles_between_engine_packages():
    """Imports between studio_core's top-level modules and packages form no cycle, lazy imports inside functions
    included (a lazy import hides a cycle from Python, not from the next engineer)."""
    graph: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        package = path.relative_to(ENGINE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("studio_core."):
                targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.ImportFrom) and node.module == "studio_core":
                targets = [a.name for a in node.names]
            graph.setdefault(package, set()).update(t for t in targets if t != package)
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in list(graph):
        visit(node)
