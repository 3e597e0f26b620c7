"""What the cluster computes and how the driver reads it: the static layout of the reduced histograms.

Every chunk's contribution, and their sum ``H``, is one float64 array per data half::

    H[process, channel, template, bin]      template = "nominal", "sumw2", then each variation

``sumw2`` is Σ(w·p)² of the nominal KDE (the MC statistical variance); the variations are weight
variations (``btag_sf_up`` …: nominal columns, varied weight) and kinematic variations (``jes_up`` …:
varied columns through ``ColumnChunk.view``, nominal weight), exactly those present in the MC chunks.
The layout is frozen and hashable: it is the static argument of the jitted per-chunk kernel, so one
layout means one compilation per chunk bucket length. Data chunks take no part (the objective is the
expected significance on Asimov data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.model_table import systematic_pairs
from zprime_grad.selection import Channel, Parameter, columns_needed, parameters

NOMINAL, SUMW2 = "nominal", "sumw2"
PARITY = "parity"


@dataclass(frozen=True)
class Layout:
    """The static shape of a contribution: processes × channels × templates × bins, and θ's order."""

    channels: tuple[Channel, ...]
    processes: tuple[str, ...]
    weight_variations: tuple[str, ...]
    kinematic_variations: tuple[str, ...]
    edges: tuple[float, ...]
    param_names: tuple[str, ...]
    columns: tuple[str, ...]  # the columns the kernel reads (cuts, observable, parity)
    kde_method: str = "dense"
    kde_window: int | None = None  # static window of the "local" KDE (for the widest bandwidth)
    networks: tuple = ()  # learned scores the channels cut on (NetworkSpec); their weights end θ
    precision: str = "float32"  # the kernel's per-event arithmetic; its sums over events are float64

    @property
    def n_cut_params(self) -> int:
        """θ = the cut thresholds (``param_names[:n_cut_params]``), then each network's flat weights."""
        return len(self.param_names) - sum(net.n_params for net in self.networks)

    def params(self, theta) -> dict:
        """θ (flat, NumPy or traced) → ``{threshold name: value, network name: weight pytree}``."""
        k = self.n_cut_params
        out = {name: theta[i] for i, name in enumerate(self.param_names[:k])}
        for net in self.networks:
            out[net.name] = net.unravel(theta[k: k + net.n_params])
            k += net.n_params
        return out

    def network_slices(self) -> dict[str, slice]:
        k, out = self.n_cut_params, {}
        for net in self.networks:
            out[net.name] = slice(k, k + net.n_params)
            k += net.n_params
        return out

    @property
    def templates(self) -> tuple[str, ...]:
        return (NOMINAL, SUMW2, *self.weight_variations, *self.kinematic_variations)

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    @property
    def bin_width(self) -> float:
        return (self.edges[-1] - self.edges[0]) / self.n_bins

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.processes), len(self.channels), len(self.templates), self.n_bins)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    def process_index(self, process: str) -> int:
        return self.processes.index(process)

    def systematics(self) -> dict[str, tuple[str, str | None]]:
        """Up/down template pairs by systematic name: ``{"jes": ("jes_up", "jes_down"), …}``; a variation
        with only ``_up`` (e.g. a one-sided jet-energy scale) pairs with ``None``: symmetrised
        (`zprime_grad.model_table.systematic_pairs`, the one pairing rule)."""
        return systematic_pairs((*self.weight_variations, *self.kinematic_variations))


def make_layout(descriptions: Sequence[Mapping], channels: Sequence[Channel], *, observable: str | None, bins: int,
                value_range: tuple[float, float], kde_method: str = "dense",
                kde_window: int | None = None, precision: str = "float32") -> Layout:
    """Derive the layout from the MC chunks' descriptions; inconsistent chunks are a ``UserError``."""
    mc = [d for d in descriptions if not d["is_data"]]
    if not mc:
        raise UserError("optimise: the columns contain no simulated (MC) chunks")
    alternative = sorted({f"{d['process']} {d['sample_variation']}" for d in mc
                          if d.get("sample_variation", NOMINAL) != NOMINAL})
    if alternative:  # they would be added to their process's nominal template
        raise UserError(f"optimise: two-point systematic samples ({', '.join(alternative)}: fileset metadata "
                        "'variation') are not modelled by the optimiser; leave them out of its fileset")
    weights, variations = set(mc[0]["weights"]), set(mc[0]["variations"])
    for d in mc[1:]:
        if set(d["weights"]) != weights or set(d["variations"]) != variations:
            raise UserError(f"optimise: chunk {d['key']} has weights/variations {d['weights']}/{d['variations']}, "
                            f"others have {sorted(weights)}/{sorted(variations)}: skim them with one processor")
    needed = columns_needed(channels) | {PARITY}
    for net in network_specs(channels):
        from zprime_grad.learn.mlp import check_features

        check_features(net, set(mc[0]["columns"]), mc[0].get("shapes"))
    missing = sorted(needed - set(mc[0]["columns"]))
    if missing:
        raise UserError(f"optimise: the skimmed columns lack {missing} (needed by the channels / observable)")
    if NOMINAL not in weights:
        raise UserError("optimise: the chunks have no 'nominal' weight")
    if observable is not None:  # one observable for every channel; None: each channel's own
        channels = tuple(Channel(c.name, c.cuts, observable) for c in channels)
    networks = network_specs(channels)
    edges = tuple(float(e) for e in np.linspace(value_range[0], value_range[1], bins + 1))
    unknown = sorted({c.observable for c in channels} - set(mc[0]["columns"]))
    if unknown:
        raise UserError(f"optimise.observable: {', '.join(map(repr, unknown))} is not a skimmed column "
                        f"(have {', '.join(sorted(c for c in mc[0]['columns'] if '[' not in c))})")
    return Layout(
        channels=channels,
        processes=tuple(sorted({d["process"] for d in mc})),
        weight_variations=tuple(sorted(weights - {NOMINAL})),
        kinematic_variations=tuple(sorted(variations)),
        edges=edges,
        param_names=(*sorted(parameters(channels)), *(n for net in networks for n in net.param_names())),
        columns=tuple(sorted(needed | {c.observable for c in channels})),
        kde_method=kde_method,
        kde_window=kde_window,
        networks=networks,
        precision=precision,
    )


def network_specs(channels: Sequence[Channel]) -> tuple:
    """The networks the channels' score cuts use, once each, in order of first use."""
    found: dict = {}
    for channel in channels:
        for cut in channel.cuts:
            net = getattr(cut, "network", None)
            if net is None:
                continue
            if net.name in found and found[net.name] != net:
                raise UserError(f"optimise: two different networks are both called '{net.name}'")
            found[net.name] = net
    return tuple(found.values())


def parameter_table(layout: Layout) -> list[Parameter]:
    """The declared parameters in θ's order (name, init, bounds, scale)."""
    found = parameters(layout.channels)
    free = (-float("inf"), float("inf"))  # network weights: unbounded, unit scale, init from the network
    return [found[n] if n in found else Parameter(n, 0.0, free, 1.0) for n in layout.param_names]


_GEV_HINTS = ("pt", "ht", "met", "mass", "mtt", "energy", "st")


def parameter_units(layout: Layout) -> dict[str, str]:
    """'GeV' for thresholds on momenta/masses, '' for scores (from the column each cut reads)."""
    units: dict[str, str] = {}
    for cut in _all_cuts(layout.channels):
        tokens = cut.column.lower().split("_")
        units[cut.param] = "GeV" if any(t in _GEV_HINTS for t in tokens) else ""
    return units


def _all_cuts(channels: Iterable[Channel]):
    for channel in channels:
        for cut in channel.cuts:
            yield from getattr(cut, "cuts", (cut,))
