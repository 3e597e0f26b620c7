"""Certified luminosity: the golden-JSON mask and the luminosity it certifies (coffea.lumi_tools).

``LumiMask`` reads the JSON through fsspec (a path or a URL) on the driver; the mask's arrays travel
with the processor, so workers need no access to the file. The certified luminosity is the recorded
luminosity of a brilcalc ``--byls`` CSV summed over the lumi sections the JSON certifies.
"""

from __future__ import annotations

import io
import json
import re

import fsspec
import numpy as np
from coffea.lumi_tools import LumiData, LumiList, LumiMask

from zprime_grad.errors import UserError

_UNITS_PB = {"/fb": 1e3, "/pb": 1.0, "/nb": 1e-3, "/ub": 1e-6}


def lumi_mask(source: str, field: str = "analysis.golden_json") -> LumiMask:
    """The mask of a golden JSON, with an error naming the file and the field when it is not one."""
    try:
        with fsspec.open(source, "rt") as f:
            golden = json.load(f)
        if not isinstance(golden, dict) or not all(
                str(run).isdigit() and isinstance(ranges, list) and all(
                    isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) and r[0] <= r[1]
                    for r in ranges) for run, ranges in golden.items()):
            raise ValueError("not {run: [[first, last], ...]}")
        return LumiMask(source)
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
