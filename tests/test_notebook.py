"""The example notebook runs top to bottom on a run directory (the synthetic one of test_analysis)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbclient  # the dev extra: nbclient, nbformat, ipykernel
import nbformat

from tests.test_analysis import make_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "examples" / "inspect_run.ipynb"
KERNEL = "nas-analysis-test"


def _kernel_spec(folder: Path) -> Path:
    """A kernel spec running this interpreter: the notebook then sees this environment whatever
    other ``python3`` kernels the machine has."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return folder


def _execute(notebook: Path, run_dir: Path, work: Path, monkeypatch) -> list:
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec(work / "jupyter")))  # searched before the user's own
    monkeypatch.setenv("NAS_RUN_DIR", str(run_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two test workers share two cores
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError naming the cell if one fails
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _outputs(cells: list, kind: str) -> list:
    return [o for cell in cells for o in cell.get("outputs", []) if o.get("output_type") == kind]


def _images(cells: list) -> list:
    shown = _outputs(cells, "display_data") + _outputs(cells, "execute_result")
    return [o for o in shown if "image/png" in o["data"]]


def _text(cells: list) -> str:
    parts = [o.get("text", "") for o in _outputs(cells, "stream")]
    parts += [o["data"].get("text/plain", "") for o in _outputs(cells, "execute_result")]
    return "\n".join(parts)


def test_notebook_runs_on_a_promoted_run(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "run", weights=True)
    cells = _execute(NOTEBOOK, run_dir, tmp_path, monkeypatch)
    assert not _outputs(cells, "error")
    # Pareto, best so far, topologies, lineage, per-class IoU, proxy vs full: each shown once
    assert len(_images(cells)) == 6
    text = _text(cells)
    assert "checkpoint spec matches: True" in text
    assert "(1, 7, 64, 64)" in text  # the rebuilt model's logits


def test_notebook_skips_promotion_on_a_fresh_search(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "run", promoted=False)  # what `nas search` alone leaves
    cells = _execute(NOTEBOOK, run_dir, tmp_path, monkeypatch)
    assert not _outputs(cells, "error")
    assert len(_images(cells)) == 5  # no proxy-vs-full figure
    text = _text(cells)
    assert "has no promoted model yet" in text
    assert "built with fresh weights" in text
    assert "(1, 7, 64, 64)" in text
