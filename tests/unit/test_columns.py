"""ColumnChunk: padding, on-disk round trip, Σ genWeight sources, and the padded object arrays."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from zprime_grad.columns import (ColumnChunk, bucket_length, concatenate, file_sumw, make_chunk, mc_weight,
                                 parity)
from zprime_grad.errors import UserError
from zprime_grad.skim.toy import write_toy_nanoaod
from zprime_grad_processors.padded import Objects


def small_chunk(n=5):
    rng = np.random.default_rng(0)
    return make_chunk(
        {"met_pt": rng.uniform(0, 100, n), "jet_pt": rng.uniform(0, 100, (n, 8))},
        {"nominal": rng.normal(1, 0.1, n), "btag_sf_up": rng.normal(1, 0.1, n)},
        {"jes_up": {"met_pt": rng.uniform(0, 100, n)}},
        {"event": np.arange(n) + 10},
        buckets=(4, 16), dataset="ttbar", process="ttbar", provenance={"file": "f.root", "entrystart": 0},
    )


def test_bucket_lengths():
    assert [bucket_length(n, (256, 1024)) for n in (0, 1, 256, 257, 1024, 1025, 5000)] == \
        [256, 256, 256, 1024, 1024, 2048, 5120]


def test_padding_rows_have_zero_weight_and_are_invalid():
    c = small_chunk()
    assert c.length == 16 and c.n_events == 5
    assert c.columns["jet_pt"].shape == (16, 8) and c.columns["jet_pt"].dtype == np.float32
    assert c.columns["valid"].tolist() == [1] * 5 + [0] * 11
    assert not c.weights["nominal"][5:].any() and (c.ids["event"][5:] == -1).all()
    assert c.view("jes_up")["met_pt"] is c.variations["jes_up"]["met_pt"]
    assert c.view("jer_up")["met_pt"] is c.columns["met_pt"]  # absent variation: nominal


def test_npz_round_trip_is_exact_and_deterministic(tmp_path):
    c = small_chunk()
    data = c.to_npz_bytes()
    assert data == small_chunk().to_npz_bytes()  # no timestamps: equal chunks, equal bytes
    (tmp_path / "c.npz").write_bytes(data)
    back = ColumnChunk.from_npz(tmp_path / "c.npz")
    assert back.meta() == c.meta()
    for k, v in c.arrays().items():
        assert np.array_equal(v, back.arrays()[k]) and v.dtype == back.arrays()[k].dtype, k
    assert np.load(tmp_path / "c.npz")["col.met_pt"].shape == (16,)  # plain numpy can read it too


def test_concatenate_keeps_only_real_rows():
    cols = concatenate([small_chunk(5), small_chunk(3)])
    assert len(cols["met_pt"]) == 8 and len(cols["weight.nominal"]) == 8


def test_parity_splits_even_and_odd_event_numbers():
    assert parity(np.array([0, 1, 2, 2**63 + 1], dtype=np.uint64)).tolist() == [0, 1, 0, 1]


def test_sumw_from_runs_tree_with_either_name_else_from_events(tmp_path):
    with_runs = write_toy_nanoaod(tmp_path / "runs.root", 300, seed=1)
    no_runs = write_toy_nanoaod(tmp_path / "noruns.root", 300, seed=1, runs_tree=False)
    gen = uproot.open(with_runs)["Events"]["genWeight"].array(library="np").astype(np.float64)
    assert file_sumw(str(with_runs)) == pytest.approx(gen.sum())
    assert file_sumw(str(no_runs)) == pytest.approx(gen.sum())
    old_style = tmp_path / "old.root"  # NanoAOD v5-v7 spelling: genEventSumw_
    with uproot.recreate(old_style) as f:
        f.mktree("Events", {"genWeight": np.float32})
        f["Events"].extend({"genWeight": np.ones(3, np.float32)})
        f.mktree("Runs", {"genEventSumw_": np.float64})
        f["Runs"].extend({"genEventSumw_": np.array([40.0, 2.0])})
    assert file_sumw(str(old_style)) == 42.0
    data = write_toy_nanoaod(tmp_path / "data.root", 10, is_data=True)
    with pytest.raises(UserError, match="data.root.*genWeight"):
        file_sumw(str(data))
    assert mc_weight(np.array([1.0, -2.0]), 10.0, 100.0, 50.0).tolist() == [20.0, -40.0]


def test_padded_objects_match_awkward():
    jagged = ak.Array([[{"pt": 30.0, "eta": 1.0}, {"pt": 50.0, "eta": -1.0}], [],
                       [{"pt": 10.0, "eta": 0.0}, {"pt": 70.0, "eta": 2.0}, {"pt": 20.0, "eta": 0.5}]])
    rows = np.array([True, False, True])
    obj = Objects.from_collection(jagged, {"pt": "pt", "eta": "eta"}, rows)
    expected = ak.to_numpy(ak.fill_none(ak.pad_none(jagged[rows].pt, 3), 0.0))
    assert np.array_equal(obj.pt, expected) and obj.count().tolist() == [2, 3]
    hard = obj.where(obj.pt > 15)
    assert hard.count().tolist() == [2, 2] and hard.sum("pt").tolist() == [80, 90]
    assert hard.leading(4).slots("pt").tolist() == [[50, 30, 0, 0], [70, 20, 0, 0]]
    assert hard.leading(2).slots("eta").tolist() == [[-1, 1], [2, 0.5]]
    assert hard.leading(1).slots("pt").tolist() == [[50], [70]]
    assert hard.leading(4).mask().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
