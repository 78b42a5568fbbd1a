"""The package's import graph has no circle and no upward import (scripts/import_graph.py, pure Python, no imports run)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_circle_and_no_upward_import():
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 circles, 0 upward" in proc.stdout


def test_the_checker_finds_a_circle_and_an_upward_edge():
    graph = _script()
    edges = {"fer_func.study.a": {"fer_func.study.b"}, "fer_func.study.b": {"fer_func.study.a", "fer_func.search.c"},
             "fer_func.search.c": set(), "fer_func.prng": set()}
    assert graph.circles(edges) == [["fer_func.study.a", "fer_func.study.b"]]
    assert graph.upward_edges(edges) == [("fer_func.study.b", "fer_func.search.c")]


def test_lazy_imports_inside_functions_count(tmp_path):
    """A function-level import is an edge like a top-level one: that is where circles hide."""
    graph = _script()
    known = {"fer_func.study.run": tmp_path / "run.py", "fer_func.distributed.ray_run": tmp_path / "ray_run.py",
             "fer_func.distributed": tmp_path / "__init__.py"}
    known["fer_func.study.run"].write_text("def run():\n    from fer_func.distributed import ray_run\n")
    assert graph.imports_of("fer_func.study.run", known["fer_func.study.run"], known) == {"fer_func.distributed.ray_run"}


def test_imports_under_type_checking_are_no_edge(tmp_path):
    """An annotation-only import (`if TYPE_CHECKING:`) never runs, so it makes no circle; a lazy one does."""
    graph = _script()
    mod = tmp_path / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fer_func.cli import main\n"
                   "def f():\n    from fer_func import tree\n")
    known = {"fer_func.cli": mod, "fer_func.tree": mod, "fer_func.x": mod}
    assert graph.imports_of("fer_func.x", mod, known) == {"fer_func.tree"}
