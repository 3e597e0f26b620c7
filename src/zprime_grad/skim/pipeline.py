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
# analysis fields outside the skim hash: file locations (their content is hashed as the era inputs) and
# the luminosity uncertainty (a fit setting)
SKIM_INDEPENDENT = {"corrections", "golden_json", "lumi_csv", "lumi_uncertainty"}


def skim_options(config: Config, **overrides) -> SkimConfig:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SkimConfig.model_validate({**config.skim.model_dump(), **given})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in err.errors())
        raise UserError(f"invalid skim option: {problems}") from None


def skim_analysis(config: Config) -> dict:
    """The analysis section as the skim depends on it: without file locations (their content enters
    `config_hash` as the era inputs' hash) and the luminosity's uncertainty (a fit setting, not in a column)."""
    return config.analysis.model_dump(mode="json", exclude=SKIM_INDEPENDENT)


def config_hash(config: Config, options: SkimConfig) -> str:
    """The analysis section without file locations, the content of the era's inputs, the skim's result fields."""
    payload = {"analysis": skim_analysis(config), "era_inputs": era_inputs(config).content_hash(),
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
    """skim.json's record of what the skim was made with (`check_skim_matches` compares it with a config)."""
    return {"cache_key": cache_key, "config_hash": config_hash(config, options),
            "processor": config.analysis.processor, "era": config.analysis.era, "executor": options.executor,
            "workers": options.workers, **options.model_dump(mode="json", include=set(RESULT_FIELDS)),
            "lumi_pb": config.analysis.lumi_pb, "analysis": skim_analysis(config), "version": __version__,
            "wall_time_s": wall, "format": "npz (see zprime_grad.skim.store)"}


def check_skim_matches(config: Config, skim_dir) -> None:
    """Refuse a skim made with another analysis than ``config``'s (the luminosity is baked into its weights,
    the processor and era into its columns): one line naming the field and both values. The skim's own
    settings (chunksize, buckets …) are taken as recorded; `run` skims again instead (its cache key)."""
    path = Path(skim_dir) / store.REPORT
    try:
        report = json.loads(path.read_text())
    except OSError:
        raise UserError(f"{path}: not found; --columns needs a finished skim directory (zprime-grad skim --out DIR)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a skim report ({err})") from None
    if not isinstance(report, dict):
        raise UserError(f"{path}: not a skim report")
    source = config.source or "the config"
    for field in ("processor", "era", "lumi_pb"):
        recorded, ours = report.get(field), getattr(config.analysis, field)
        if field in report and recorded != ours:
            raise UserError(f"{path}: the skim was made with analysis.{field} = {recorded!r}, {source} has {ours!r}; "
                            "skim again with this config (or run with the skim's)")
    if "config_hash" not in report:
        return
    recorded_options = {k: report[k] for k in RESULT_FIELDS if k in report}
    ours = config_hash(config, skim_options(config, **recorded_options))
    if ours == report["config_hash"]:
        return
    ours_analysis, theirs = _flat(skim_analysis(config)), _flat(report.get("analysis") or {})
    differing = sorted(k for k in set(ours_analysis) | set(theirs) if ours_analysis.get(k) != theirs.get(k))
    if report.get("analysis") is not None and differing:
        key = differing[0]
        what = f"analysis.{key} = {theirs.get(key)!r}, {source} has {ours_analysis.get(key)!r}"
    elif report.get("version") not in (None, __version__):
        what = f"zprime_grad {report['version']}, this is {__version__}"
    else:
        what = f"other analysis inputs (config hash {report['config_hash']}, {source}'s {ours}: the era's files' content)"
    raise UserError(f"{path}: the skim was made with {what}; skim again with this config (or run with the skim's)")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):  # an empty mapping adds no key: {} and {"met": ...} differ in options.met
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
