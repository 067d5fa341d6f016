"""Every DAG file parses, stays thin, and imports nothing heavy at module level."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import PROJECT_ROOT

DAG_FILES = sorted((PROJECT_ROOT / "dags").glob("*.py"))
HEAVY = ("tensorflow", "keras", "mlflow", "cv2", "pipeline.stages", "pipeline.model")

_PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "mlflow", "cv2"}
               or m.startswith(("pipeline.stages", "pipeline.model")))
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, str(PROJECT_ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_dag_imports_without_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dags"] == ["prepare_dataset", "score_incoming", "train_detector"]


def test_parsing_dags_imports_no_heavy_library(parsed):
    assert parsed["heavy"] == [], f"DAG parsing imported {parsed['heavy']}; import inside task bodies"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_only_wire(path: Path):
    tree = ast.parse(path.read_text())
    top_imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top_imports for a in n.names] + [
        n.module or "" for n in top_imports if isinstance(n, ast.ImportFrom)
    ]
    assert not any(name.startswith(HEAVY) for name in names)
    assert len(path.read_text().splitlines()) <= 100


def test_pipeline_package_never_imports_airflow():
    offenders = []
    for path in (PROJECT_ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {m}" for m in modules if m.split(".")[0] == "airflow"]
    assert offenders == []
