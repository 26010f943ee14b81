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
