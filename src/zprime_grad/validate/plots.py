"""Validation plots with mplhep (CMS style): optimisation history, hard-cut templates, pulls.

Every function takes the objects validation wrote (``optimisation.json`` payload, the ``{label:
hist.Hist}`` histograms, the fit results of ``validation.json``) and returns a matplotlib Figure;
`write_all` saves them as PNG under ``OUT/plots/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zprime_grad.validate.hists import DATA, template

LUMI_LABEL = "{lumi:.1f} fb$^{{-1}}$ (13 TeV)"


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    return plt, mplhep


def _label(ax, mplhep, lumi_fb: float | None):
    mplhep.cms.label("Private Work", data=False, ax=ax, loc=0, fontsize=15,
                     rlabel=LUMI_LABEL.format(lumi=lumi_fb) if lumi_fb else "(13 TeV)")


def parameter_trajectories(history: dict, lumi_fb: float | None = None):
    plt, mplhep = _style()
    names = history["parameters"]
    epochs = [e["epoch"] for e in history["epochs"]]
    theta = np.array([e["theta"] for e in history["epochs"]])
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), sharex=True)
    for ax, name, values in zip(np.atleast_1d(axes), names, theta.T):
        ax.plot(epochs, values, marker="o", ms=3)
        ax.set_ylabel(name, fontsize=14)
    np.atleast_1d(axes)[-1].set_xlabel("epoch")
    _label(np.atleast_1d(axes)[0], mplhep, lumi_fb)
    return fig


def significance_history(history: dict, lumi_fb: float | None = None):
    plt, mplhep = _style()
    fig, ax = plt.subplots(figsize=(10, 7))
    epochs = [e["epoch"] for e in history["epochs"]]
    ax.plot(epochs, [e["z_train"] for e in history["epochs"]], marker="o", ms=3, label="train (even events)")
    ax.plot(epochs, [e["z_valid"] for e in history["epochs"]], marker="s", ms=3, label="validation (odd events)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"soft expected $Z_0$")
    ax.legend()
    _label(ax, mplhep, lumi_fb)
    return fig


def stacked_templates(hists: dict, channel: str, processes, signal: str, lumi_fb: float | None = None):
    """Per cut set (baseline, optimised): stacked backgrounds, signal line, pseudo-data points."""
    plt, mplhep = _style()
    fig, axes = plt.subplots(1, len(hists), figsize=(9 * len(hists), 7), sharey=True)
    for ax, (label, h) in zip(np.atleast_1d(axes), hists.items()):
        edges = h.axes["observable"].edges
        backgrounds = [p for p in processes if p not in (signal, DATA)]
        mplhep.histplot([template(h, channel, p)[0] for p in backgrounds], edges, stack=True, histtype="fill",
                        label=backgrounds, ax=ax)
        mplhep.histplot(template(h, channel, signal)[0], edges, histtype="step", color="k", ls="--",
                        label=f"{signal} (μ = 1)", ax=ax)
        data = template(h, channel, DATA)[0]
        if data.sum() > 0:
            mplhep.histplot(data, edges, histtype="errorbar", yerr=np.sqrt(data), color="k", label="pseudo-data", ax=ax)
        ax.set_yscale("log")
        ax.set_xlabel(f"{h.axes['observable'].label} [GeV]")
        ax.legend(fontsize=12, title=f"{channel}, {label} cuts\n(held-out events)", title_fontsize=13)
        _label(ax, mplhep, lumi_fb)
    np.atleast_1d(axes)[0].set_ylabel("events / bin")
    return fig


def pulls(fits: dict):
    """Pulls (θ̂ − θ₀)/σ_prefit of the constrained non-staterror parameters, one marker per cut set."""
    plt, mplhep = _style()
    names = sorted({k for fit in fits.values() for k, v in fit.get("parameters", {}).items()
                    if "pull" in v and not k.startswith("staterror")})
    fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * max(len(names), 1)))
    for i, (label, fit) in enumerate(fits.items()):
        params = fit.get("parameters", {})
        y = np.arange(len(names)) + 0.15 * (i - 0.5)
        x = [params.get(n, {}).get("pull", np.nan) for n in names]
        xerr = [params.get(n, {}).get("constraint", np.nan) for n in names]
        ax.errorbar(x, y, xerr=xerr, fmt="o", label=label)
    ax.axvspan(-1, 1, color="0.9")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(names)), names, fontsize=12)
    ax.set_xlabel(r"$(\hat\theta - \theta_0)/\Delta\theta$")
    ax.legend(fontsize=12)
    return fig


def write_all(out: Path, hists: dict, summary: dict, history: dict | None, *, signal: str,
              lumi_fb: float | None = None) -> list[str]:
    """Save every plot that the inputs allow under ``out/plots/``; returns the relative paths."""
    plt, _ = _style()
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    if history and history.get("epochs"):
        figures["parameters.png"] = parameter_trajectories(history, lumi_fb)
        figures["significance_per_epoch.png"] = significance_history(history, lumi_fb)
    for channel in summary["channels"]:
        figures[f"templates_{channel}.png"] = stacked_templates(hists, channel, summary["processes"] + [DATA], signal,
                                                                lumi_fb)
    figures["pulls.png"] = pulls({label: summary[label]["fit"] for label in ("baseline", "optimised")})
    written = []
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(f"plots/{name}")
    return written
