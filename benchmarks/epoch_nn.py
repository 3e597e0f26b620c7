"""Epoch time with a network (reverse mode) vs cuts only, at the same number of events.

For each sample size (events replicated from a skim with ``tiled_chunk``, as ``benchmarks/epoch.py``)
it times steady-state optimisation epochs (Z0 + exact gradient on the even events, Z0 on the odd) of:

* ``cuts``          — the default analysis: 5 cut thresholds, ``gradient: auto`` (= forward mode);
* ``cuts-reverse``  — the same cuts in reverse mode (what the network case pays for the VJP round);
* ``network``       — the cuts + the ``configs/zprime_nn.yaml`` network as a score cut in the signal
                      channel (1 000+ parameters, ``auto`` = reverse mode: primal round + VJP round).

The network's weights are its initialisation (with the feature scaling fitted on the events):
the cost does not depend on their values. Compilation and the first epoch are excluded (``first_epoch_s``),
the median of ``--repeat`` epochs is reported, and ``ratio_network_vs_cuts`` per size. Backends:
``local`` (chunks in this process) and/or ``dask-2`` (2 pinned single-threaded workers).

    .venv/bin/python benchmarks/epoch_nn.py --columns outputs/skim --sizes 100000 300000 --backends local dask-2

Writes ``benchmarks/results/epoch_nn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from epoch import SINGLE_THREAD_XLA, balanced_submit, pin_workers, plan, small_skim, time_epochs  # noqa: E402

MODES = ("cuts", "cuts-reverse", "network")


def configs(nn_config: str):
    """(cuts-only config, network config) from the network config (which extends the default)."""
    from zprime_grad.config import load_config, parse_config

    with_net = load_config(nn_config)
    data = with_net.model_dump(mode="json", exclude={"source"})
    data["optimise"]["networks"] = {}
    return parse_config(data, f"{nn_config} (cuts only)"), with_net


def initial_network(config, backend):
    """``{name: (spec, params)}``: initial weights, feature scaling fitted on the backend's events."""
    from zprime_grad.learn.train import pretrain

    out = {}
    for name in config.optimise.networks:
        model = config.models[name].model_copy(update={"train": config.models[name].train.model_copy(update={"epochs": 0})})
        spec, params, _ = pretrain(backend, name, model, signal=config.optimise.signal, progress=False)
        out[name] = (spec, params)
    return out


def measure(cuts_config, net_config, paths, n_events: int, repeat: int, backends, modes) -> list[dict]:
    from distributed import Client, LocalCluster

    from zprime_grad.columns import ColumnChunk
    from zprime_grad.chunks import DaskChunks, LocalChunks, chunk_description
    from zprime_grad.optimise.driver import Evaluator, build_problem
    from zprime_grad.scaling import tiled_chunk

    jobs = plan([chunk_description(ColumnChunk.from_npz(p)) for p in paths], n_events)
    relax, rows = (12.0, 0.25), []

    def run_modes(backend, label, workers):
        networks = initial_network(net_config, backend)
        for mode in modes:
            config = net_config if mode == "network" else cuts_config
            gradient = "reverse" if mode == "cuts-reverse" else None
            tic = time.perf_counter()
            problem = build_problem(config, backend, gradient, networks if mode == "network" else None)
            setup_s = time.perf_counter() - tic
            median, first_s, (mem, _) = time_epochs(Evaluator(backend, problem), problem.theta0, relax, repeat)
            row = {"events": n_events, "backend": label, "workers": workers, "mode": mode,
                   "gradient_mode": problem.mode, "parameters": len(problem.theta0), "chunks": len(jobs),
                   "epoch_s": median, "first_epoch_s": first_s, "setup_s": setup_s,
                   "driver_peak_rss_delta_mb": mem}
            print(json.dumps(row), flush=True)
            rows.append(row)

    if "local" in backends:
        chunks = [tiled_chunk(paths, *job) for job in jobs]
        local = LocalChunks(chunks, fan_in=cuts_config.optimise.fan_in)
        run_modes(local, "local", 1)
        local.close()
        del chunks, local
    if "dask-2" in backends:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, env={"XLA_FLAGS": SINGLE_THREAD_XLA}) as cluster, \
                Client(cluster) as client:
            pin_workers(client)
            backend = DaskChunks(client, balanced_submit(client, tiled_chunk, paths, jobs),
                                  fan_in=cuts_config.optimise.fan_in)
            run_modes(backend, "dask-2", 2)
            backend.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", help="a skim directory to replicate (default: generate + skim the test dataset)")
    parser.add_argument("--config", default=str(REPO / "configs" / "zprime_nn.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["local"], choices=("local", "dask-2"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--workdir", default="/tmp/zprime_grad_bench_epoch")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "epoch_nn.json"))
    args = parser.parse_args()

    from zprime_grad.chunks import chunk_paths

    columns = Path(args.columns) if args.columns else small_skim(Path(args.workdir))
    cuts_config, net_config = configs(args.config)
    paths = chunk_paths(columns)
    rows = []
    for n in args.sizes:
        rows.extend(measure(cuts_config, net_config, paths, n, args.repeat, args.backends, args.modes))
    ratios = {}
    for r in rows:
        if r["mode"] == "network":
            base = next((c for c in rows if c["mode"] == "cuts" and c["events"] == r["events"]
                         and c["backend"] == r["backend"]), None)
            if base:
                ratios[f"{r['backend']}@{r['events']}"] = r["epoch_s"] / base["epoch_s"]
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_end": os.getloadavg()},
              "config": args.config, "repeat": args.repeat, "ratio_network_vs_cuts": ratios, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
