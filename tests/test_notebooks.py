"""Committed notebooks stay clean and in step with the package, without running them (tests/stages runs them).

No outputs or execution counts are committed; every code cell compiles (IPython magics included);
every name imported from ``pipeline`` exists, and so does every attribute the cells use of an imported
``pipeline`` module; MongoDB and MLflow are reached through ``pipeline.store`` and ``pipeline.tracking``.
Names are looked up in the modules' source, so this needs no TensorFlow import and takes a second.
"""

import ast
import functools
import json
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from pipeline.settings import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_dataset.ipynb", "02_model.ipynb", "03_verdicts.ipynb"]
FORBIDDEN = ("pymongo", "mlflow")  # one module owns each: pipeline.store and pipeline.tracking


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


@functools.cache
def _top_level_names(module: str) -> frozenset[str]:
    """What a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(_module_file(module).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return frozenset(names)


def test_the_notebooks_are_the_three_of_the_issue():
    assert [path.name for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs_and_name_the_python3_kernel(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook["cells"][0]["cell_type"] == "markdown"  # says what the notebook shows and where data come from
    for cell in _code_cells(path):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_compile_and_what_they_use_of_pipeline_exists(path):
    trees = [ast.parse(TransformerManager().transform_cell("".join(c["source"]))) for c in _code_cells(path)]
    modules: dict[str, str] = {}  # names the notebook binds to pipeline modules -> module
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Import):
            assert not any(alias.name.split(".")[0] in FORBIDDEN for alias in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] not in FORBIDDEN, ast.unparse(node)
            if node.module.split(".")[0] != "pipeline":
                continue
            assert _module_file(node.module), f"{path.name}: no module {node.module}"
            for alias in node.names:
                if _module_file(submodule := f"{node.module}.{alias.name}"):
                    modules[alias.asname or alias.name] = submodule
                else:
                    assert alias.name in _top_level_names(node.module), f"{path.name}: no {submodule}"
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            module = modules[node.value.id]
            assert node.attr in _top_level_names(module), f"{path.name}: no {module}.{node.attr}"
