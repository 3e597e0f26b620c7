"""``notebooks/zprime_analysis.ipynb`` executed top to bottom by a real IPython kernel (nbclient), on the
session's small generated dataset, without and with Dask (a 2-worker LocalCluster on 127.0.0.1).

The small setup is injected papermill-style: a cell of overrides right after the cell tagged
``parameters``. The kernel is this interpreter (a kernelspec written to a temporary directory), never
whatever ``python3`` kernel happens to be installed globally.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "zprime_analysis.ipynb"
KERNEL = "zprime-grad-test"


def kernel_manager(tmp_path: Path):
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zprime_grad test kernel", "language": "python",
        "env": {"MPLBACKEND": "agg", "PYTHONWARNINGS": "ignore"},
    }))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    assert specs.get_kernel_spec(KERNEL).argv[0] == sys.executable
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def with_parameters(nb, values: dict):
    """papermill's convention: the overrides go in a new cell right after the ``parameters`` cell."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def outputs_of(nb, kind: str):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == kind]


def text_of(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            parts.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("use_dask", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["futures", "dask"])
def test_notebook_runs_top_to_bottom(generated, tmp_path, use_dask):
    data = generated.config.model_dump(mode="json", exclude={"source"})
    out = tmp_path / "outputs"
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), {
        # the session's dataset: generate_dataset finds every file already there and reuses it
        "CONFIG_OVERRIDES": {"analysis": data["analysis"], "generate": data["generate"],
                             "validation": {"bootstrap": data["validation"]["bootstrap"]}},
        "FILESET": None, "DATA_DIR": str(generated.out),
        "N_FILES_MAX_PER_SAMPLE": -1 if use_dask else 1,
        "USE_DASK": use_dask, "EXECUTOR": "futures", "SCHEDULER_ADDRESS": None, "N_WORKERS": 2,
        "EPOCHS": 2, "OUTPUT_DIR": str(out),
    })
    client = nbclient.NotebookClient(nb, km=kernel_manager(tmp_path), timeout=300, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    files = sorted(generated.out.rglob("*.root"))
    before = [f.stat().st_mtime_ns for f in files]
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # for a look at what failed (and the timings)
    assert [f.stat().st_mtime_ns for f in files] == before  # the generation cell reused the session's files

    text = text_of(nb)
    assert "live plot updated 2 times" in text
    assert "improvement x" in text
    images = [o for kind in ("display_data", "execute_result") for o in outputs_of(nb, kind) if "image/png" in o.data]
    # the live plot, the pulls, pre-fit data/MC in 3 channels (post-fit where cabinetry can draw it), the
    # validation's own template plot
    assert len(images) >= 1 + 3 + 1, len(images)
    assert "pre-fit: not drawn" not in text

    validation = json.loads((out / "validate" / "validation.json").read_text())
    if (validation["optimised"]["fit"]["method"] or "").startswith("cabinetry.fit.fit"):
        # the notebook's fit tries what the validation's does, so it converges too: pulls + post-fit plots
        assert "MLE fit to the pseudo-data: mu_hat" in text
        assert len(images) >= 1 + 1 + 3 + 1, len(images)
    for label in ("baseline", "optimised"):
        assert math.isfinite(validation[label]["Z_hard"]) and validation[label]["Z_hard"] > 0
    params = json.loads((out / "optimise" / "params.json").read_text())
    assert params["epochs_run"] == 2
    assert [p["value"] for p in params["parameters"]] == [validation["optimised"]["params"][p["name"]]
                                                         for p in params["parameters"]]
    assert (out / "config.yaml").is_file() and (out / "validate" / "report.html").is_file()
