"""``zprime_grad.lumi.GoldenMask``: coffea's ``LumiMask`` lookup in numpy, without its import-time compile."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from zprime_grad.lumi import GoldenMask, lumi_mask

SHIPPED = str(files("zprime_grad.data") / "golden_generated.json")
REAL_2016 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "opendata2016" / \
    "Cert_271036-284044_13TeV_Legacy2016_Collisions16_JSON.txt"


def probes(golden: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every range's edges and neighbours, random sections of certified runs, and runs the JSON lacks."""
    rng = np.random.default_rng(seed)
    runs, lumis = [], []
    for run, ranges in golden.items():
        for first, last in ranges:
            for lumi in (first - 1, first, first + 1, last - 1, last, last + 1):
                runs.append(int(run))
                lumis.append(max(lumi, 1))
        top = max(last for _, last in ranges) + 5
        runs += [int(run)] * 20
        lumis += rng.integers(1, top, 20).tolist()
    known = sorted(int(r) for r in golden)
    runs += [known[0] - 1, known[-1] + 1, known[0] + 1 if str(known[0] + 1) not in golden else known[0]]
    lumis += [1, 1, 1]
    order = rng.permutation(len(runs))
    return np.array(runs, np.uint32)[order], np.array(lumis, np.uint32)[order]


@pytest.mark.parametrize("source", [SHIPPED, str(REAL_2016)], ids=["shipped", "cms_2016_golden"])
def test_the_mask_equals_coffeas_lumimask(source):
    if not Path(source).exists():
        pytest.skip(f"{Path(source).name} is not beside this checkout (../shared/data/opendata2016)")
    from coffea.lumi_tools import LumiMask

    golden = json.loads(Path(source).read_text())
    runs, lumis = probes(golden)
    ours, coffeas = lumi_mask(source), LumiMask(source)
    np.testing.assert_array_equal(ours(runs, lumis), coffeas(runs, lumis))
    assert 0 < ours(runs, lumis).sum() < len(runs)
    # the skim's content hash reads these bounds: they are coffea's, so the hash did not change
    assert ours.masks.keys() == coffeas._masks.keys()
    for run, bounds in coffeas._masks.items():
        np.testing.assert_array_equal(ours.masks[run], bounds)


def test_edges_of_a_range():
    mask = GoldenMask({"1": [[5, 7], [10, 10]], "3": [[1, 2]]})
    runs = np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 3])
    lumis = np.array([4, 5, 6, 7, 8, 9, 10, 11, 5, 1, 2, 3])
    assert mask(runs, lumis).tolist() == [False, True, True, True, False, False, True, False, False, True, True, False]
    assert mask(np.array([], np.uint32), np.array([], np.uint32)).shape == (0,)


def test_importing_the_mask_compiles_nothing():
    code = "import sys, zprime_grad.lumi, zprime_grad.era_inputs; print('coffea.lumi_tools' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
