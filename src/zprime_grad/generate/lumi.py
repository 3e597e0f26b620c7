"""The pseudo-data's runs and lumi sections, its certification (golden JSON) and its brilcalc CSV.

Layout (fixed, the same for every configuration): runs ``RUNS`` (1001–1010; MC keeps run 1, as CMS MC
does) of ``LS_PER_RUN`` = 200 lumi sections each, 2,000 in all, of equal recorded luminosity. The
shipped golden JSON (``zprime_grad/data/golden_generated.json``, written by ``make_corrections.py``
from ``golden_json()``) certifies all but the blocks in ``EXCLUDED`` (a ramp at the start of a run, two
subsystem outages, a run's end): 80 lumi sections, 4.0 %, so 1,920 are certified.

The configuration's ``analysis.lumi_pb`` is the *certified* luminosity (what the MC is normalised to),
so each lumi section records lumi_pb / 1920 and the pseudo-data are generated at the delivered
luminosity lumi_pb · 2000 / 1920: after the golden-JSON mask the data match the MC.

``brilcalc_csv`` writes what ``brilcalc lumi --byls --output-style csv -u /pb`` writes, the format
``coffea.lumi_tools.LumiData`` reads (columns ``run:fill, ls, time, beamstatus, E(GeV), delivered(/pb),
recorded(/pb), avgpu, source``; LumiData sums column 6, recorded, in /pb): every lumi section,
certified or not, as brilcalc lists them without ``-i``. ``avgpu`` is the section's mean pile-up μ.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

FIRST_RUN, N_RUNS, LS_PER_RUN = 1001, 10, 200
RUNS = tuple(range(FIRST_RUN, FIRST_RUN + N_RUNS))
EXCLUDED = {1002: [(1, 12)], 1004: [(95, 120)], 1007: [(181, 200)], 1009: [(40, 61)]}  # inclusive ranges
LS_SECONDS = 2**18 / (40079000 / 3564)  # 23.31 s: 2^18 orbits
START = datetime.datetime(2016, 8, 1, 0, 0, 0)


def sections() -> tuple[np.ndarray, np.ndarray]:
    """(run, lumi section) of every lumi section, run by run."""
    runs = np.repeat(np.array(RUNS, np.uint32), LS_PER_RUN)
    ls = np.tile(np.arange(1, LS_PER_RUN + 1, dtype=np.uint32), N_RUNS)
    return runs, ls


def certified() -> np.ndarray:
    """Boolean mask over ``sections()``: the lumi sections the golden JSON certifies."""
    runs, ls = sections()
    good = np.ones(len(runs), bool)
    for run, ranges in EXCLUDED.items():
        for first, last in ranges:
            good &= ~((runs == run) & (ls >= first) & (ls <= last))
    return good


def golden_json() -> dict[str, list[list[int]]]:
    """``{"run": [[first, last], ...]}``: the certified lumi sections as ranges (golden-JSON format)."""
    runs, ls = sections()
    good = certified()
    out: dict[str, list[list[int]]] = {}
    for run in RUNS:
        ranges: list[list[int]] = []
        for section in ls[(runs == run) & good].tolist():
            if ranges and ranges[-1][1] == section - 1:
                ranges[-1][1] = section
            else:
                ranges.append([section, section])
        if ranges:
            out[str(run)] = ranges
    return out


def delivered_fraction() -> float:
    """All lumi sections over the certified ones: delivered / certified luminosity."""
    return len(certified()) / int(certified().sum())


def brilcalc_csv(path: Path, lumi_per_section_pb: float, avgpu: np.ndarray) -> None:
    """Write the ``--byls`` CSV of every lumi section (each recording ``lumi_per_section_pb``)."""
    runs, ls = sections()
    lines = ["#Data tag : zprime_grad generated , Norm tag: None",
             "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source"]
    for i, (run, section, mu) in enumerate(zip(runs.tolist(), ls.tolist(), avgpu.tolist())):
        run_index = run - FIRST_RUN
        when = START + datetime.timedelta(hours=6 * run_index, seconds=(section - 1) * LS_SECONDS)
        lumi = f"{lumi_per_section_pb:.10g}"  # no dead time: delivered = recorded
        lines.append(f"{run}:{run},{section}:{section},{when:%m/%d/%y %H:%M:%S},STABLE BEAMS,6500,"
                     f"{lumi},{lumi},{mu:.2f},GENERATED")
    total = f"{lumi_per_section_pb * len(runs):.10g}"
    lines += ["#Summary:", "#nfill,nrun,nls,ncms,totdelivered(/pb),totrecorded(/pb)",
              f"#{N_RUNS},{N_RUNS},{len(runs)},{len(runs)},{total},{total}"]
    path.write_text("\n".join(lines) + "\n")
