"""Fill the hard-cut histograms: from a fileset through coffea's ``Runner`` (any executor), or from
ColumnChunks already skimmed (a skim directory, a `SkimResult`, resident chunks on Dask).

Every path runs `hists.fill_chunk` on the same ColumnChunks, so they give the same histograms (the
tests compare them). The fileset is checked on the driver first (files, branches, xsec, Σ genWeight),
exactly as for the skim.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path
from typing import Mapping

from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema

from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import check_files, fill_sumw, load_fileset
from zprime_grad.skim.runner import declared_reading, user_error_from
from zprime_grad.validate.hists import Binning, fill_chunk
from zprime_grad.validate.processor import ValidationProcessor

EXECUTORS = ("iterative", "futures", "dask")


def prepare_fileset(fileset, analysis) -> dict:
    """The checked fileset with ``sumw`` filled per dataset (as the skim does it)."""
    checked, _ = check_files(load_fileset(fileset), analysis)
    return fill_sumw(checked)


def coffea_executor(name: str, *, workers: int = 2, client=None):
    if name == "iterative":
        return coffea_processor.IterativeExecutor(status=False)
    if name == "futures":
        import loky

        pool = loky.get_reusable_executor(max_workers=workers)
        return coffea_processor.FuturesExecutor(workers=workers, pool=pool, status=False)
    if name == "dask":
        if client is None:
            raise UserError("validate: the dask executor needs a Dask client (--scheduler, or client=)")
        return coffea_processor.DaskExecutor(client=client, status=False, treereduction=4)
    raise UserError(f"validate: executor must be one of {', '.join(EXECUTORS)}, not '{name}'")


def fill_with_runner(fileset, analysis, binning: Binning, thetas: Mapping[str, Mapping[str, float]], *,
                     executor: str = "iterative", workers: int = 2, client=None, chunksize: int = 100_000,
                     treename: str = "Events", checked: bool = False) -> dict:
    """``{label: hist.Hist}`` over the whole fileset with `ValidationProcessor` through coffea's Runner."""
    fileset = fileset if checked else prepare_fileset(fileset, analysis)
    fileset, iteritems_options = declared_reading(fileset, analysis)  # the skim's bulk read of its branches
    runner = coffea_processor.Runner(coffea_executor(executor, workers=workers, client=client),
                                     schema=NanoAODSchema, chunksize=chunksize)
    stderr = io.StringIO()  # FuturesExecutor prints a traceback before re-raising; keep it quiet
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(stderr):
            warnings.filterwarnings("ignore", message="Performed attempt")
            out = runner(fileset, ValidationProcessor(analysis, binning, thetas), treename=treename,
                         iteritems_options=iteritems_options)
    except UserError:
        raise
    except Exception as err:
        raise user_error_from(err) from None
    return out


def add_outputs(parts) -> dict:
    """Σ of dicts of summable values (``{label: Hist}`` as coffea's accumulate adds them, or arrays)."""
    total: dict = {}
    for filled in parts:
        total = filled if not total else {k: total[k] + filled[k] for k in total}
    return total


def reduce_columns(columns, per_chunk) -> dict:
    """Σ ``per_chunk(chunk)`` (a dict of summable values) over skimmed chunks: a skim directory, a
    `SkimResult`, a list of chunks, or `ResidentChunks` (computed on the workers that hold the chunks;
    only the results come back)."""
    if hasattr(columns, "futures") and hasattr(columns, "client"):  # resident on Dask
        client = columns.client
        parts = client.map(per_chunk, list(columns.futures), pure=False)
        return client.submit(add_outputs, parts).result()
    if isinstance(columns, (list, tuple)):
        chunks = columns
    elif hasattr(columns, "chunks") and not isinstance(columns, (str, Path)):
        chunks = columns.chunks
    else:
        from zprime_grad.columns import ColumnChunk
        from zprime_grad.optimise.sources import chunk_paths

        chunks = (ColumnChunk.from_npz(p) for p in chunk_paths(columns))
    return add_outputs(per_chunk(chunk) for chunk in chunks)


def fill_from_columns(columns, binning: Binning, thetas: Mapping[str, Mapping[str, float]]) -> dict:
    """The same histograms from skimmed chunks (any source `reduce_columns` takes)."""
    thetas = {k: dict(v) for k, v in thetas.items()}
    return reduce_columns(columns, functools.partial(fill_chunk, binning=binning, thetas=thetas))
