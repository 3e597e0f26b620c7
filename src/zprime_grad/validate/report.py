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
luminosity), hist → cabinetry → pyhf, systematics included. Improvement Z<sub>hard</sub>(θ*) / Z<sub>hard</sub>(θ₀):
<b>{_fmt(summary.get('improvement'))}</b>; (Z<sub>soft</sub> − Z<sub>hard</sub>) / Z<sub>hard</sub> at θ*:
<b>{_fmt(summary.get('soft_minus_hard_relative'))}</b>.</p>
<h2>Significance</h2><table>{''.join(z)}</table>
<h2>Cut parameters</h2><table>{''.join(params)}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def write_report(out: Path, summary: dict) -> str:
    images = {}
    for rel in summary["outputs"].get("plots", []):
        path = out / rel
        if path.exists():
            images[Path(rel).stem] = path.read_bytes()
    (out / "report.html").write_text(render(summary, images))
    return "report.html"
