"""Issue acceptance on the generated dataset: futures and dask skims agree; the physics is sensible."""

from __future__ import annotations

import json

import numpy as np

from zprime_grad.cli import main
from zprime_grad.columns import concatenate
from zprime_grad.skim.store import read_columns


def test_futures_and_dask_skims_of_the_generated_dataset_are_identical(generated_fileset, tmp_path, capsys):
    for executor, out in (("futures", "A"), ("dask", "B")):
        rc = main(["skim", "--fileset", str(generated_fileset), "--executor", executor, "--workers", "2",
                   "--out", str(tmp_path / out)])
        assert rc == 0, capsys.readouterr().err
    a, b = (json.loads((tmp_path / x / "skim.json").read_text()) for x in "AB")
    meta = {ds: e["metadata"] for ds, e in json.loads(generated_fileset.read_text()).items()}
    assert set(a["datasets"]) == set(meta)
    assert {m["process"] for m in meta.values()} >= {"zprime", "ttbar", "wjets", "single_top", "data"}
    for ds in a["datasets"]:
        assert a["datasets"][ds]["channels"] == b["datasets"][ds]["channels"], ds
    for c in a["columns"]:
        assert (tmp_path / "A" / c["path"]).read_bytes() == (tmp_path / "B" / c["path"]).read_bytes()

    chunks = read_columns(tmp_path / "A")
    by_process = {}
    for c in chunks:
        by_process.setdefault(c.process, []).append(c)
    signal = concatenate(by_process["zprime"])
    ttbar = concatenate(by_process["ttbar"])
    assert len(signal["mtt"]) > 10 and len(ttbar["mtt"]) > 10
    # the Z' (2 TeV) reconstructs at higher m_tt than SM tt̄, in both observables
    for obs in ("mtt", "mtt_simple"):
        assert np.median(signal[obs]) > np.median(ttbar[obs]) > 300, obs
    # per process: Σ of skimmed weights is positive and below xsec·lumi (the skim only removes events)
    raw, weighted, produced = {}, {}, {}
    for ds, d in a["datasets"].items():
        p = d["process"]
        for ch, c in d["channels"].items():
            raw[p, ch] = raw.get((p, ch), 0) + c["raw"]
            weighted[p, ch] = weighted.get((p, ch), 0.0) + c["weighted"]
        if not meta[ds]["is_data"]:
            produced[p] = produced.get(p, 0.0) + meta[ds]["xsec"] * a["lumi_pb"]
    for p, total in produced.items():
        assert 0 < weighted[p, "skim"] < total, p
    # the signal region is enriched in signal relative to the W+jets control region
    assert raw["zprime", "signal"] > raw["zprime", "wjets_cr"]
    assert weighted["wjets", "wjets_cr"] / weighted["wjets", "skim"] > weighted["zprime", "wjets_cr"] / weighted["zprime", "skim"]
