"""Certified luminosity: the golden-JSON mask and the luminosity it certifies.

``GoldenMask`` reads the JSON through fsspec (a path or a URL) on the driver; its arrays travel with the
processor, so workers need no access to the file. It is coffea's ``LumiMask`` lookup (per run, the
sorted ``[first - 1, last]`` bounds and one ``searchsorted``; a lumi section is certified when it lands
at an odd position) in numpy: coffea compiles its numba kernels when ``coffea.lumi_tools`` is imported,
which took 4.5-6.7 s in every process that unpickles a processor (each skim and Dask worker, each CLI
run); tests/unit/test_lumi.py checks both give the same mask. The certified luminosity is the
recorded luminosity of a brilcalc ``--byls`` CSV summed over the lumi sections the JSON certifies
(coffea's ``LumiData``, imported only there).
"""

from __future__ import annotations

import io
import json
import re

import fsspec
import numpy as np

from zprime_grad.errors import UserError

_UNITS_PB = {"/fb": 1e3, "/pb": 1.0, "/nb": 1e-3, "/ub": 1e-6}


class GoldenMask:
    """``mask(runs, lumis)`` → bool array: which (run, lumi section) pairs the golden JSON certifies."""

    def __init__(self, golden: dict):
        self.masks: dict[np.uint32, np.ndarray] = {}
        for run, ranges in golden.items():
            bounds = np.array(ranges, dtype=np.uint32).flatten()
            bounds[::2] -= 1  # (first - 1, last]: searchsorted's odd positions
            self.masks[np.uint32(run)] = bounds

    def __call__(self, runs, lumis) -> np.ndarray:
        runs, lumis = np.asarray(runs).astype(np.uint32), np.asarray(lumis).astype(np.uint32)
        certified = np.zeros(runs.shape, dtype=bool)
        for run in np.unique(runs):
            bounds = self.masks.get(run)
            if bounds is not None:
                here = runs == run
                certified[here] = np.searchsorted(bounds, lumis[here]) % 2 == 1
        return certified


def lumi_mask(source: str, field: str = "analysis.golden_json") -> GoldenMask:
    """The mask of a golden JSON, with an error naming the file and the field when it is not one."""
    try:
        with fsspec.open(source, "rt") as f:
            golden = json.load(f)
        if not isinstance(golden, dict) or not all(
                str(run).isdigit() and isinstance(ranges, list) and all(
                    isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) and r[0] <= r[1]
                    for r in ranges) for run, ranges in golden.items()):
            raise ValueError("not {run: [[first, last], ...]}")
        return GoldenMask(golden)
    except (OSError, ValueError) as err:
        raise UserError(f"{field}: {source}: not a readable certified-luminosity JSON ({err})") from None


def _unit_to_pb(text: str, source: str) -> float:
    """brilcalc writes the unit in the header (``recorded(/pb)``); without one, coffea's /pb is assumed."""
    for line in text.splitlines():
        if line.startswith("#") and "recorded" in line:
            found = re.search(r"recorded\((/[fpnu]b)\)", line)
            if found:
                return _UNITS_PB[found.group(1)]
            raise UserError(f"analysis.lumi_csv: {source}: unknown unit in the header {line.strip()!r}")
    return 1.0


def certified_lumi_pb(lumi_csv: str, golden_json: str) -> float:
    """Σ recorded luminosity (pb⁻¹) of the CSV's lumi sections that the golden JSON certifies."""
    from coffea.lumi_tools import LumiData, LumiList

    try:
        with fsspec.open(lumi_csv, "rt") as f:
            text = f.read()
        data = LumiData(io.StringIO(text))
        runs, lumis = data._lumidata[:, 0].astype(np.uint32), data._lumidata[:, 1].astype(np.uint32)
    except (OSError, ValueError, IndexError) as err:
        raise UserError(f"analysis.lumi_csv: {lumi_csv}: not a brilcalc --byls CSV ({err})") from None
    keep = lumi_mask(golden_json)(runs, lumis)
    if not keep.any():
        raise UserError(f"analysis.lumi_csv: {lumi_csv}: no lumi section is certified by {golden_json}")
    value = data.get_lumi(LumiList(runs[keep], lumis[keep])) * _unit_to_pb(text, lumi_csv)
    return float(value)
