"""The differentiable core's speed: Z0 value+grad from templates, and from events (dense vs local KDE).

Model: 3 channels x 20 bins x 5 samples (signal + 4 backgrounds); 67 parameters (mu, 4 normsys,
2 histosys, 60 staterror gammas). Measured, after compilation (reported separately):

* ``templates_to_z``  — ``jax.value_and_grad`` of the expected discovery Z0 w.r.t. all templates, given
  as the packed vector (the driver's form) and as the templates pytree (138 leaves; dispatch-bound).
* ``kde``             — value+grad of one 20-bin weighted KDE (sum of yields and sumw2) over the events of
  one template, dense vs local: the acceptance ratio.
* ``events_to_z``     — the whole chain: soft cuts (3 thresholds, one per channel) -> KDE templates
  (nominal, sumw2, two histosys variations from event-level shifts) -> Z0, value+grad w.r.t. the
  thresholds; dense vs local KDE, with the agreement of the two results.

Timings are per call: minimum, lower quartile, median and mean wall clock, and the mean process CPU
time (see ``timed``). Writes ``benchmarks/results/stats.json`` (``--out`` to change).

    .venv/bin/python benchmarks/stats.py [--events-per-template 10000] [--calls 400] [--out PATH] [--cores N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ``--cores N`` pins this process to N cores before jax starts (XLA sizes its thread pool from the
# affinity). On this shared 2-core machine the fit loop's many small steps hop between XLA's threads,
# and a hop to a core busy with another process waits for the scheduler: calls were bimodal (~1 ms or
# ~16 ms). Pinned to one core they are steady. The main run measures both (the 1-core part in a child).
if "--cores" in sys.argv:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(sys.argv[sys.argv.index("--cores") + 1])])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)  # this script is its own process: float64 throughout, as the package's stages

from zprime_grad import soft
from zprime_grad.stats import Model, safe_sqrt

REPO = Path(__file__).resolve().parents[1]
CHANNELS, SAMPLES, N_BINS = ("ch0", "ch1", "ch2"), ("signal", "bkg1", "bkg2", "bkg3", "bkg4"), 20
EDGES = np.linspace(-3.0, 4.0, N_BINS + 1)
BANDWIDTH = 0.2  # x bin width
SCALE = 0.2  # sigmoid transition width, in units of the cut variable


def model_spec(rng: np.random.Generator) -> dict:
    """The benchmark's workspace: every template is a placeholder the events overwrite."""
    channels = []
    for c, channel in enumerate(CHANNELS):
        samples = []
        for s, name in enumerate(SAMPLES):
            nominal = (5.0 if s == 0 else 50.0 / s) * np.exp(-np.linspace(0, 2, N_BINS)) * rng.uniform(0.8, 1.2, N_BINS) + 1.0
            modifiers = [
                {"name": f"staterror_{channel}", "type": "staterror", "data": list(0.2 * np.sqrt(nominal))},
                {"name": "lumi_norm", "type": "normsys", "data": {"hi": 1.02, "lo": 0.98}},
            ]
            if s == 0:
                modifiers.append({"name": "mu", "type": "normfactor", "data": None})
            elif s <= 3:
                modifiers.append({"name": f"xsec_bkg{s}", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}})
            for h in ("scale_y", "shift_x"):
                modifiers.append({"name": h, "type": "histosys", "data": {
                    "hi_data": list(nominal * rng.uniform(1.0, 1.08, N_BINS)),
                    "lo_data": list(nominal * rng.uniform(0.92, 1.0, N_BINS))}})
            samples.append({"name": name, "data": list(nominal), "modifiers": modifiers})
        channels.append({"name": channel, "samples": samples})
    return {
        "channels": channels,
        "observations": [{"name": ch, "data": [1.0] * N_BINS} for ch in CHANNELS],
        "measurements": [{"name": "bench", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def timed(fn, *args, calls: int) -> dict:
    """Per-call wall-clock seconds (min, quartiles, mean) over ``calls`` calls, and mean process CPU time.

    On a shared machine single calls are sometimes preempted: the minimum and the lower quartile show
    the cost of the work, the median and mean what a user saw during this run.
    """
    jax.block_until_ready(fn(*args))
    times = []
    c0 = time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / calls
    t = np.asarray(times)
    return {"min_s": float(t.min()), "p25_s": float(np.percentile(t, 25)), "median_s": float(np.median(t)),
            "mean_s": float(t.mean()), "cpu_mean_s": cpu, "calls": calls}


def ms(stats: dict) -> str:
    return (f"median {stats['median_s'] * 1e3:.3f} ms (min {stats['min_s'] * 1e3:.3f}, "
            f"p25 {stats['p25_s'] * 1e3:.3f}, cpu/call {stats['cpu_mean_s'] * 1e3:.3f})")


def compile_time(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def make_events(rng: np.random.Generator, n: int) -> dict:
    """Per (channel, sample): cut variable x, observable y, weight w (each sample normalised)."""
    events = {}
    for c, channel in enumerate(CHANNELS):
        for s, name in enumerate(SAMPLES):
            x = rng.normal(1.0 if s == 0 else -0.3 * s, 1.0, n)
            y = rng.normal(1.5, 0.8, n) if s == 0 else rng.exponential(1.0 + 0.3 * s, n) - 2.5
            total = 20.0 if s == 0 else 400.0 / s
            events[channel, name] = (jnp.asarray(x), jnp.asarray(y), jnp.full(n, total / n))
    return events


def events_objective(model: Model, events: dict, method: str, window: int | None):
    """thresholds[3] -> Z0: soft cut per channel, KDE templates (nominal, sumw2, 2 histosys), Z0."""
    def kde(y, w):
        return soft.kde_histogram(y, w, EDGES, BANDWIDTH, relative=True, method=method, window=window)

    def objective(thresholds):
        templates = model.nominal_templates()
        for c, channel in enumerate(CHANNELS):
            for name in SAMPLES:
                x, y, w = events[channel, name]
                weight = w * soft.sigmoid_cut(x, thresholds[c], SCALE)
                yields, sumw2 = kde(y, weight)
                t = templates[channel][name]
                t["data"] = yields
                t["staterror"][f"staterror_{channel}"] = safe_sqrt(sumw2)  # local KDE: exact zeros
                t["histosys"]["scale_y"] = {"hi_data": kde(1.05 * y, weight)[0], "lo_data": kde(0.95 * y, weight)[0]}
                w_up = w * soft.sigmoid_cut(x + 0.1, thresholds[c], SCALE)
                w_dn = w * soft.sigmoid_cut(x - 0.1, thresholds[c], SCALE)
                t["histosys"]["shift_x"] = {"hi_data": kde(y, w_up)[0], "lo_data": kde(y, w_dn)[0]}
        return model.discovery_significance(templates)

    return objective


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-template", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=400, help="calls timed for templates->Z0 (KDE: /10)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/stats.json"))
    parser.add_argument("--cores", type=int, default=None, help="pin to this many cores (set before jax starts)")
    parser.add_argument("--only-templates", action="store_true", help="only the templates->Z0 part")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(2024)

    model = Model.from_pyhf(model_spec(rng), source="benchmark")
    packed = model.pack()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "cores_used": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "loadavg_start": os.getloadavg()},
        "model": {"channels": len(CHANNELS), "bins_per_channel": N_BINS, "samples": len(SAMPLES),
                  "parameters": model.structure.n_parameters, "template_values": int(packed.shape[0]),
                  "template_leaves": len(jax.tree.leaves(model.nominal_templates()))},
    }

    # --- templates -> Z0
    vg_packed = jax.jit(jax.value_and_grad(model.discovery_significance))
    compile_s = compile_time(vg_packed, packed)
    z, grad = vg_packed(packed)
    vg_tree = jax.jit(jax.value_and_grad(model.discovery_significance))
    tree_compile_s = compile_time(vg_tree, model.nominal_templates())
    result["templates_to_z"] = {
        "Z0": float(z), "grad_norm": float(jnp.linalg.norm(grad)),
        "compile_s": compile_s, "packed": timed(vg_packed, packed, calls=args.calls),
        "pytree_compile_s": tree_compile_s, "pytree": timed(vg_tree, model.nominal_templates(), calls=args.calls),
    }
    cores = len(os.sched_getaffinity(0))
    print(f"[{cores} cores] templates->Z0 value+grad, packed: {ms(result['templates_to_z']['packed'])}; "
          f"compile {compile_s:.1f} s")
    print(f"[{cores} cores] templates->Z0 value+grad, pytree: {ms(result['templates_to_z']['pytree'])}")

    if args.only_templates:
        return _write(result, args.out)
    if args.cores is None:  # the same measurement pinned to one core, in a child process
        with tempfile.TemporaryDirectory() as tmp:
            child = Path(tmp) / "one_core.json"
            subprocess.run([sys.executable, __file__, "--cores", "1", "--only-templates", "--calls", str(args.calls),
                            "--out", str(child)], check=True)
            pinned = json.loads(child.read_text())["templates_to_z"]
        result["templates_to_z_one_core"] = pinned

    # --- one KDE template, dense vs local
    n = args.events_per_template
    events = make_events(rng, n)
    x, y, w = events["ch0", "bkg1"]
    window = soft.kde_window(EDGES, BANDWIDTH, relative=True)
    kde_timings = {}
    for method in ("dense", "local"):
        def kde_objective(t, method=method):
            yields, sumw2 = soft.kde_histogram(y, w * soft.sigmoid_cut(x, t, SCALE), EDGES, BANDWIDTH,
                                               relative=True, method=method, window=window)
            return jnp.sum(yields**2) + jnp.sum(sumw2)

        f = jax.jit(jax.value_and_grad(kde_objective))
        kde_timings[method] = timed(f, 0.2, calls=max(20, args.calls // 10))
        kde_timings[method]["value"] = float(f(0.2)[0])
        kde_timings[method]["grad"] = float(f(0.2)[1])
    kde_timings["window_bins"] = window
    kde_timings["speedup_local_vs_dense"] = kde_timings["dense"]["median_s"] / kde_timings["local"]["median_s"]
    kde_timings["speedup_local_vs_dense_min"] = kde_timings["dense"]["min_s"] / kde_timings["local"]["min_s"]
    kde_timings["speedup_local_vs_dense_cpu"] = kde_timings["dense"]["cpu_mean_s"] / kde_timings["local"]["cpu_mean_s"]
    kde_timings["rel_diff_value"] = abs(kde_timings["local"]["value"] / kde_timings["dense"]["value"] - 1)
    result["kde"] = {"events": n, **kde_timings}
    print(f"KDE ({n} events, {N_BINS} bins) value+grad: dense {kde_timings['dense']['median_s'] * 1e3:.2f} ms, "
          f"local {kde_timings['local']['median_s'] * 1e3:.2f} ms: x{kde_timings['speedup_local_vs_dense']:.2f} "
          f"(min x{kde_timings['speedup_local_vs_dense_min']:.2f}, cpu x{kde_timings['speedup_local_vs_dense_cpu']:.2f}); "
          f"rel. diff {kde_timings['rel_diff_value']:.1e}")

    # --- events -> Z0
    thresholds = jnp.asarray([0.0, 0.2, -0.2])
    chain = {}
    for method in ("dense", "local"):
        f = jax.jit(jax.value_and_grad(events_objective(model, events, method, window)))
        compile_s = compile_time(f, thresholds)
        z, g = f(thresholds)
        chain[method] = {"compile_s": compile_s, "Z0": float(z), "grad": [float(v) for v in g],
                         **timed(f, thresholds, calls=10)}
        n_events = len(events) * n
        chain[method]["events"] = n_events
        chain[method]["events_per_s"] = n_events / chain[method]["median_s"]
    chain["speedup_local_vs_dense"] = chain["dense"]["median_s"] / chain["local"]["median_s"]
    chain["speedup_local_vs_dense_min"] = chain["dense"]["min_s"] / chain["local"]["min_s"]
    chain["speedup_local_vs_dense_cpu"] = chain["dense"]["cpu_mean_s"] / chain["local"]["cpu_mean_s"]
    chain["rel_diff_Z0"] = abs(chain["local"]["Z0"] / chain["dense"]["Z0"] - 1)
    chain["max_rel_diff_grad"] = max(abs(a - b) / abs(b) for a, b in zip(chain["local"]["grad"], chain["dense"]["grad"]))
    result["events_to_z"] = chain
    print(f"events->Z0 value+grad ({len(events) * n} events, 5 KDE per template): dense "
          f"{chain['dense']['median_s'] * 1e3:.1f} ms, local {chain['local']['median_s'] * 1e3:.1f} ms: "
          f"x{chain['speedup_local_vs_dense']:.2f} (cpu x{chain['speedup_local_vs_dense_cpu']:.2f}); Z0 {chain['local']['Z0']:.6f} (rel diff {chain['rel_diff_Z0']:.1e}, "
          f"grad {chain['max_rel_diff_grad']:.1e})")

    return _write(result, args.out)


def _write(result: dict, path: str) -> dict:
    result["machine"]["loadavg_end"] = os.getloadavg()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
