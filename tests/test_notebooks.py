"""Committed notebooks keep their outputs and lose stray metadata (tools/clean_notebooks.py)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import clean_notebooks  # noqa: E402


def test_clean_keeps_outputs_and_tags_and_drops_widget_state():
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": 3, "id": "a1", "source": "print(1)",
                   "metadata": {"tags": ["nbval-check-output"], "ExecuteTime": {"start": "x"}, "collapsed": True},
                   "outputs": [{"output_type": "display_data", "metadata": {"w": 1},
                                "data": {"text/plain": "bar", "application/vnd.jupyter.widget-view+json": {}}}]}],
        "metadata": {"widgets": {"state": {}}, "kernelspec": {"name": "python3"}, "toc": {}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    cleaned = clean_notebooks.clean(notebook)
    cell = cleaned["cells"][0]
    assert cell["metadata"] == {"tags": ["nbval-check-output"]} and cell["execution_count"] == 3
    assert cell["outputs"][0]["data"] == {"text/plain": "bar"}
    assert set(cleaned["metadata"]) == {"kernelspec", "language_info"}
    assert clean_notebooks.clean(json.loads(clean_notebooks.dumps(cleaned))) == cleaned  # idempotent


def test_committed_notebooks_are_clean():
    assert clean_notebooks.main(["--check"]) == 0


def test_committed_notebooks_carry_outputs():
    for path in sorted((ROOT / "chapters").glob("[0-9]*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and c["source"]]
        assert code and all(c.get("execution_count") for c in code), f"{path.name} is not fully executed"
