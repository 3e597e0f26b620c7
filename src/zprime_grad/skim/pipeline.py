"""The skim stage end to end: fileset → checked inputs → chunks (local or resident) → columns/ + skim.json.

Results depend on the analysis section, the processor, ``chunksize``, ``buckets`` and the inputs; the
executor, worker count and scheduler do not, so they are left out of the cache key and the config
hash written into every chunk's provenance (a futures and a dask skim give identical files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from pydantic import ValidationError

from zprime_grad import __version__, terminal
from zprime_grad.config import Config, SkimConfig
from zprime_grad.era_inputs import era_inputs
from zprime_grad.errors import UserError
from zprime_grad.skim import store
from zprime_grad.skim.fileset import check_files, fileset_fingerprint, load_fileset
from zprime_grad.skim.resident import ResidentChunks, run_dask
from zprime_grad.skim.runner import SkimResult, load_processor, run_local

log = logging.getLogger(__name__)
RESULT_FIELDS = ("chunksize", "buckets", "treename", "skip_bad_files")


def skim_options(config: Config, **overrides) -> SkimConfig:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SkimConfig.model_validate({**config.skim.model_dump(), **given})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in err.errors())
        raise UserError(f"invalid skim option: {problems}") from None


def config_hash(config: Config, options: SkimConfig) -> str:
    """The analysis section without file locations, the content of the era's inputs, the skim's result fields."""
    analysis = config.analysis.model_dump(mode="json", exclude={"corrections", "golden_json", "lumi_csv"})
    payload = {"analysis": analysis, "era_inputs": era_inputs(config).content_hash(),
               "skim": options.model_dump(mode="json", include=set(RESULT_FIELDS)), "version": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_processor(config: Config, options: SkimConfig | None = None):
    """The configured analysis' processor: its era's inputs resolved here, on the driver."""
    options = options or config.skim
    return load_processor(config.analysis.processor, lumi_pb=config.analysis.lumi_pb, buckets=options.buckets,
                          config_hash=config_hash(config, options), inputs=era_inputs(config),
                          options=config.analysis.options)


def run_skim(config: Config, fileset, options: SkimConfig, *, client=None,
             progress: bool | None = None) -> SkimResult | ResidentChunks:
    """Skim with the chosen executor. ``dask``: returns a handle to chunks that stay on the workers."""
    processor = make_processor(config, options)
    fileset, bad = check_files(load_fileset(fileset), processor, skip_bad_files=options.skip_bad_files)
    # Σ genWeight is filled by either, without the files that fail in reading
    if options.executor != "dask":
        result = run_local(fileset, processor, executor=options.executor, workers=options.workers,
                           chunksize=options.chunksize, treename=options.treename, progress=progress,
                           skip_bad_files=options.skip_bad_files)
    elif client is None:
        raise UserError("skim: the dask executor needs a Dask client (a Session opens the run's cluster)")
    else:
        result = run_dask(fileset, processor, client, chunksize=options.chunksize, treename=options.treename,
                          retries=options.retries, skip_bad_files=options.skip_bad_files)
    result.bad_files = bad + result.bad_files
    return result


def report_info(config: Config, options: SkimConfig, cache_key: str, wall: float) -> dict:
    return {"cache_key": cache_key, "config_hash": config_hash(config, options),
            "processor": config.analysis.processor, "executor": options.executor,
            "workers": options.workers, "chunksize": options.chunksize, "buckets": list(options.buckets),
            "lumi_pb": config.analysis.lumi_pb, "wall_time_s": wall, "format": "npz (see zprime_grad.skim.store)"}


def skim_cache_key(config: Config, options: SkimConfig, inputs: dict) -> str:
    """What a skim's result depends on: config, processor and the inputs' logical names and sizes."""
    return hashlib.sha256(f"{config_hash(config, options)}:{config.analysis.processor}:"
                          f"{fileset_fingerprint(inputs)}".encode()).hexdigest()[:16]


def skim_report(config: Config, options: SkimConfig, cache_key: str, result: SkimResult | ResidentChunks,
                wall: float, *, columns: list[dict]) -> dict:
    """skim.json of a finished skim (chunks here or resident): counts, metrics and the column files."""
    metrics = (store.metrics_from_chunks(result.summaries) if isinstance(result, ResidentChunks)
               else result.dataset_metrics)
    report = store.build_report(result.summaries, metrics, bad_files=result.bad_files,
                                info=report_info(config, options, cache_key, wall))
    report["columns"] = sorted(columns, key=lambda c: c["path"])
    return report


def skim_to_directory(config: Config, fileset, out, options: SkimConfig, *, client=None,
                      progress: bool | None = None) -> tuple[dict, bool]:
    """Write ``out/columns/`` and ``out/skim.json``; reuse them when config and inputs are unchanged and
    every chunk file verifies (one skim of ``out`` at a time: `store.exclusive`)."""
    with store.exclusive(out):
        return _skim_to_directory(config, fileset, Path(out), options, client=client, progress=progress)


def _skim_to_directory(config: Config, fileset, out: Path, options: SkimConfig, *, client=None,
                       progress: bool | None = None) -> tuple[dict, bool]:
    inputs = load_fileset(fileset)
    cache_key = skim_cache_key(config, options, inputs)
    cached = store.cached_report(out, cache_key)
    if cached is not None:
        log.info("skim: %s is up to date (cache key %s)", out / store.REPORT, cache_key)
        terminal.say(f"skim: reused {out} (same config and inputs)")
        return cached, True
    start = time.perf_counter()
    tmp = store.fresh_columns_dir(out)
    try:
        result = run_skim(config, inputs, options, client=client, progress=progress)
        try:
            if isinstance(result, ResidentChunks):
                written = result.write(str(tmp))
            else:
                written = [store.write_chunk(c, str(tmp)) for c in result.chunks]
        finally:
            if isinstance(result, ResidentChunks):
                result.release()
        report = skim_report(config, options, cache_key, result, time.perf_counter() - start, columns=written)
        store.commit(out, tmp, report)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial skim behind
        raise
    return report, False
