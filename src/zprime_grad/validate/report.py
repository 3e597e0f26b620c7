"""``report.html``: one self-contained page (plots inlined as base64 PNG) with the validation numbers."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _row(*cells, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def render(summary: dict, images: dict[str, bytes]) -> str:
    base, opt = summary["baseline"], summary["optimised"]
    names = sorted(set(base["params"]) | set(opt["params"]))
    params = [_row("parameter", "baseline θ₀", "optimised θ*", header=True)]
    params += [_row(n, _fmt(base["params"].get(n), 6), _fmt(opt["params"].get(n), 6)) for n in names]
    z = [_row("", "baseline", "optimised", header=True),
         _row("Z hard (cabinetry/pyhf, Asimov)", _fmt(base["Z_hard"]), _fmt(opt["Z_hard"])),
         _row("Z hard in the optimiser's model", _fmt(base.get("Z_hard_optimiser_model")),
              _fmt(opt.get("Z_hard_optimiser_model"))),
         _row("Z soft (optimiser, odd events)", "", _fmt(opt.get("Z_soft"))),
         _row("μ̂ (fit to pseudo-data)", _fmt(base["fit"].get("mu_hat")), _fmt(opt["fit"].get("mu_hat"))),
         _row("σ(μ̂)", _fmt(base["fit"].get("mu_uncertainty")), _fmt(opt["fit"].get("mu_uncertainty")))]
    if base.get("toys") or opt.get("toys"):  # validation.toys: the asymptotic Z0 checked with toys
        z += [_row(f"Z from toys ({(base.get('toys') or opt['toys'])['n']} per hypothesis, JAX)",
                   _toy(base.get("toys")), _toy(opt.get("toys")))]
    boot = (summary.get("bootstrap") or {}).get("analyses")
    if boot:  # the held-out MC's own noise (validation.bootstrap replicas)
        z += [_row("± bootstrap of the held-out MC (optimiser's model)", _fmt(boot["baseline"]["Z_std"], 2),
                   _fmt(boot["optimised"]["Z_std"], 2)),
              _row("improvement, bootstrap 68 % interval", "",
                   "{:.3f} – {:.3f}".format(*boot["optimised"]["ratio_interval_68"]))]
    if summary.get("figure_of_merit") == "mu_uncertainty":  # a measurement: the optimised σ(μ), Asimov
        z += [_row("σ(μ) hard (pyhf, Asimov Hessian)", _fmt(base.get("mu_uncertainty_hard")),
                   _fmt(opt.get("mu_uncertainty_hard"))),
              _row("σ(μ) hard in the optimiser's model", _fmt(base.get("mu_uncertainty_hard_optimiser_model")),
                   _fmt(opt.get("mu_uncertainty_hard_optimiser_model"))),
              _row("σ(μ) soft (optimiser, odd events)", "", _fmt(opt.get("mu_uncertainty_soft")))]
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in images.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zprime_grad validation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body>
<h1>Validation of the optimised cuts with the standard tools</h1>
<p>Hard cuts on the <b>held-out (odd) events</b> (weights ×{summary['heldout_weight_scale']:g} to the full
luminosity), hist → cabinetry → pyhf, systematics included. Improvement {_improvement(summary)}:
<b>{_fmt(summary.get('improvement'))}</b>; (soft − hard) / hard at θ*:
<b>{_fmt(summary.get('soft_minus_hard_relative'))}</b>.</p>
<h2>Significance</h2><table>{''.join(z)}</table>
{_fit_warnings(summary)}{_comparisons(summary)}{_learned(summary)}<h2>Cut parameters</h2><table>{''.join(params)}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def _toy(t: dict | None) -> str:
    """Toy Z ± its uncertainty vs the asymptotic Z in the same likelihood, and whether they agree."""
    if not t:
        return "n/a"
    z = (f"{t['z']:.3f} ± {t['z_uncertainty']:.3f}" if t.get("z") is not None
         else f"> {_fmt(t.get('z_lower_bound'), 3)}")
    verdict = "agrees" if t.get("agree") else "differs"
    return (f"{z} vs asymptotic {_fmt(t.get('asymptotic_z'))} ({verdict}; p0 = {_fmt(t.get('p0'), 3)}, "
            f"{t.get('n_exceed')} toys above; {t.get('failed')} failed fits)")


def write_report(out: Path, summary: dict) -> str:
    images = {}
    for rel in summary["outputs"].get("plots", []):
        path = out / rel
        if path.exists():
            images[Path(rel).stem] = path.read_bytes()
    (out / "report.html").write_text(render(summary, images))
    return "report.html"


def _fit_warnings(summary: dict) -> str:
    """Fits that really failed (``validation.json: fit_warnings``), next to the numbers they affect."""
    found = summary.get("fit_warnings") or []
    if not found:
        return ""
    return "<p><b>Fit warnings</b></p><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in found) + "</ul>\n"


def _improvement(summary: dict) -> str:
    if summary.get("figure_of_merit") == "mu_uncertainty":
        return "σ<sub>hard</sub>(μ; θ₀) / σ<sub>hard</sub>(μ; θ*)"
    return "Z<sub>hard</sub>(θ*) / Z<sub>hard</sub>(θ₀)"


def _learned(summary: dict) -> str:
    """Configs with networks (``zprime_grad.stages.learned``): one row per analysis, held-out hard-cut Z₀."""
    learned = summary.get("learned")
    if not learned:
        return ""
    rows = [_row("analysis", "Z hard (cabinetry/pyhf)", "Z soft (optimiser)", "network weights (trained here)",
                 header=True)]
    rows += [_row(r["label"], _fmt(r["Z_hard"]), _fmt(r.get("Z_soft")),
                  f"{r['network_parameters']} ({r['trainable_network_parameters']})") for r in learned["rows"]]
    nets = []
    for name, n in learned.get("networks", {}).items():
        t = n["training"]
        nets.append(f"<li>{html.escape(name)}: {n['n_params']} weights, pre-trained {t['epochs_run']} epochs "
                    f"(kept epoch {t['best_epoch']}); held-out cross-entropy "
                    f"{_fmt(t['loss_initial']['loss_heldout'])} → {_fmt(t['loss_best']['loss_heldout'])}</li>")
    return (f"<h2>Learned observables</h2><p>{html.escape(learned.get('heldout', ''))}; fine-tuned / cuts only: "
            f"<b>{_fmt(learned.get('finetuned_over_cuts_only'))}</b></p><table>{''.join(rows)}</table>"
            f"{_bootstrap(learned.get('bootstrap'))}<ul>{''.join(nets)}</ul>\n")


def _bootstrap(boot: dict | None) -> str:
    """The analyses on the same bootstrap replicas of the held-out MC: Z₀ ± spread, ratio to the reference."""
    if not boot:
        return ""
    ref = boot["reference"]
    rows = [_row("analysis", "Z (optimiser's model)", "± bootstrap", f"ratio to {ref}", "± bootstrap",
                 "68 % interval", "replicas above", header=True)]
    for label, a in boot["analyses"].items():
        lo, hi = a["ratio_interval_68"]
        rows.append(_row(label, _fmt(a["Z"]), _fmt(a["Z_std"], 2), _fmt(a[f"ratio_to_{ref}"]), _fmt(a["ratio_std"], 2),
                         f"{lo:.3f} – {hi:.3f}", f"{a['fraction_above_reference']:.0%}"))
    return (f"<p>{boot['replicas']} replicas: {html.escape(boot['method'])}.</p>"
            f"<table>{''.join(rows)}</table>")


def _comparisons(summary: dict) -> str:
    """Other cuts validated beside θ* (the black-box scan's best, ``scan:``): the same held-out numbers."""
    comparisons = summary.get("comparisons")
    if not comparisons:
        return ""
    opt = summary["optimised"]
    boot = (summary.get("bootstrap") or {}).get("analyses") or {}
    against = ((summary.get("bootstrap") or {}).get("against_optimised")) or {}
    rows = [_row("cuts", "how they were chosen", "objective evaluations", "Z hard (cabinetry/pyhf)",
                 "Z hard (optimiser's model)", "improvement", "bootstrap 68 % interval",
                 "Z / Z(θ*), 68 % interval", "replicas above θ*", header=True)]

    def interval(a: dict | None, key: str = "ratio_interval_68") -> str:
        return "{:.3f} – {:.3f}".format(*a[key]) if a else "n/a"

    rows.append(_row("optimised θ* (gradient)", "gradient descent on the training half", "",
                     _fmt(opt["Z_hard"]), _fmt(opt.get("Z_hard_optimiser_model")), _fmt(summary.get("improvement")),
                     interval(boot.get("optimised")), "", ""))
    for label, c in comparisons.items():
        a = against.get(label)
        rows.append(_row(label, c.get("method", ""), c.get("evaluations", ""), _fmt(c["Z_hard"]),
                         _fmt(c.get("Z_hard_optimiser_model")), _fmt(c.get("improvement")), interval(boot.get(label)),
                         interval(a), f"{a['fraction_above_reference']:.0%}" if a else "n/a"))
    return ("<h2>Black-box comparison</h2><p>The same cuts chosen without gradients on the same training events, "
            "validated on the same held-out events (improvement: over the baseline θ₀).</p>"
            f"<table>{''.join(rows)}</table>\n")
