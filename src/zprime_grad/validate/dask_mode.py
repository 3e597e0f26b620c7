"""The same hard-cut histograms through coffea's dask-awkward mode: NanoEvents ``mode="dask"`` + dask-histogram.

The idiom of current coffea notebooks: per dataset, ``NanoEventsFactory.from_root(files, mode="dask")``
gives a lazy dask-awkward array of events; ``dak.map_partitions`` runs the analysis processor's own
``process`` on each (eager) partition and turns its ColumnChunk into a flat table of fill entries
(`hists.selections`: the same hard masks, held-out half, weights and variations as the Runner path);
a ``hist.dask.Hist`` is filled from that table and computed on the given Dask client (or the
synchronous scheduler). Categories travel as integer codes and are named again at the end, so the
result is the same ``{label: hist.Hist}`` as `fill.fill_with_runner`.

dask-awkward's column optimisation would trace ``process`` with typetracers, which the numpy-based
processor does not support; it is switched off for this graph (every branch of a partition is read).
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import awkward as ak
import dask
import numpy as np

from zprime_grad.validate.hists import DATA, Binning, empty_hist, selections, variations_of

FIELDS = ("label", "channel", "process", "variation", "x", "w")


def _meta() -> ak.Array:
    empty = ak.Array({f: np.zeros(0, np.int64 if f not in ("x", "w") else np.float64) for f in FIELDS})
    return ak.Array(empty.layout.to_typetracer(forget_length=True))


def fill_entries(events, analysis, binning: Binning, thetas, codes: Mapping[str, Sequence[str]]) -> ak.Array:
    """One partition (eager NanoEvents) → the flat table of (coded) fill entries of its held-out events."""
    index = {axis: {name: i for i, name in enumerate(names)} for axis, names in codes.items()}
    parts = {f: [] for f in FIELDS}
    for chunk in analysis.process(events)["chunks"]:
        for label, channel, process, variation, _, x, w in selections(chunk, binning, thetas):
            for f, value in (("label", label), ("channel", channel), ("process", process), ("variation", variation)):
                parts[f].append(np.full(len(x), index[f][value], np.int64))
            parts["x"].append(x)
            parts["w"].append(w)
    return ak.Array({f: np.concatenate(v) if v else np.zeros(0, np.int64 if f not in ("x", "w") else np.float64)
                     for f, v in parts.items()})


def probe_variations(fileset: dict, analysis, treename: str = "Events") -> list[str]:
    """The variations the processor produces: run it eagerly on the first entries of one MC file."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    for dataset, entry in fileset.items():
        if entry["metadata"].get("is_data"):
            continue
        filename, tree = next(iter(entry["files"].items()))
        events = NanoEventsFactory.from_root({filename: tree or treename}, schemaclass=NanoAODSchema, mode="eager",
                                             entry_stop=100, metadata={**entry["metadata"], "dataset": dataset,
                                                                       "filename": filename}).events()
        chunk = analysis.process(events)["chunks"][0]
        return [v for v, _, _ in variations_of(chunk)]
    return ["nominal"]


def fill_with_dask_awkward(fileset: dict, analysis, binning: Binning, thetas: Mapping[str, Mapping[str, float]], *,
                           client=None, steps_per_file: int = 1, treename: str = "Events") -> dict:
    """``{label: hist.Hist}`` over a checked fileset (`fill.prepare_fileset`), computed on ``client``."""
    import dask_awkward as dak
    import hist.dask
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    thetas = {k: {p: v if isinstance(v, (list, dict)) else float(v) for p, v in t.items()} for k, t in thetas.items()}
    processes = sorted({DATA if e["metadata"].get("is_data") else e["metadata"].get("process", d)
                        for d, e in fileset.items()})
    codes = {"label": list(thetas), "channel": [c.name for c in binning.channels], "process": processes,
             "variation": probe_variations(fileset, analysis, treename)}
    axes = [hist.axis.IntCategory(range(len(codes[a])), name=a) for a in codes]
    axes.append(hist.axis.Variable(binning.edges, name="x", underflow=False, overflow=False))
    lazy = []  # one dask histogram per dataset (one fill each), added after the compute
    for dataset, entry in fileset.items():
        files = {f: tree or treename for f, tree in entry["files"].items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            events = NanoEventsFactory.from_root(files, schemaclass=NanoAODSchema, mode="dask",
                                                 steps_per_file=steps_per_file,
                                                 metadata={**entry["metadata"], "dataset": dataset}).events()
        table = dak.map_partitions(fill_entries, events, analysis=analysis, binning=binning, thetas=thetas,
                                   codes=codes, meta=_meta(), label=f"validate-{dataset}")
        h = hist.dask.Hist(*axes, storage=hist.storage.Weight())
        h.fill(label=table.label, channel=table.channel, process=table.process, variation=table.variation,
               x=table.x, weight=table.w)
        lazy.append(h)
    with dask.config.set({"awkward.optimization.enabled": False}):
        if client is not None:
            parts = client.gather(client.compute(lazy))
        else:
            parts = dask.compute(*lazy, scheduler="sync")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return named(total, codes, binning)


def named(coded, codes: Mapping[str, Sequence[str]], binning: Binning) -> dict:
    """Integer-coded result → ``{label: hist.Hist}`` with the StrCategory axes of `hists.empty_hist`."""
    view = coded.view()
    out = {}
    for i, label in enumerate(codes["label"]):
        h = empty_hist(binning, codes["channel"], codes["process"], codes["variation"])
        h.view().value[...] = view.value[i]
        h.view().variance[...] = view.variance[i]
        out[label] = h
    return out
