"""Fill the hard-cut histograms: from a fileset through coffea's ``Runner`` (any executor), or from
ColumnChunks already skimmed (`zprime_grad.chunks`: in this process, or resident on Dask).

Every path runs `hists.fill_chunk` on the same ColumnChunks, so they give the same histograms (the
tests compare them). The fileset is checked on the driver first (files, branches, xsec, Σ genWeight),
exactly as for the skim.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from dataclasses import dataclass
from typing import Mapping

from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema

from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import check_files, fill_sumw, load_fileset
from zprime_grad.skim.runner import declared_reading, user_error_from
from zprime_grad.validate.hists import Binning, fill_chunk
from zprime_grad.validate.processor import ValidationProcessor

EXECUTORS = ("iterative", "futures", "dask")


@dataclass(frozen=True)
class FilesetInput:
    """A fileset the validation reads itself (coffea's Runner or dask-awkward) instead of skimmed chunks;
    a `stages.session.Session` builds it with the run's executor and client."""

    fileset: object  # a coffea fileset dict or JSON path
    executor: str  # iterative | futures | dask
    client: object = None
    workers: int = 2
    chunksize: int | None = None
    mode: str = "runner"  # runner | dask-awkward


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
                                     schema=NanoAODSchema, chunksize=chunksize,
                                     metadata_cache={})  # coffea's default lives for the process (skim/runner.py)
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


def fill_from_columns(chunks, binning: Binning, thetas: Mapping[str, Mapping[str, float]]) -> dict:
    """The same histograms from skimmed chunks (`zprime_grad.chunks`: filled where the chunks are; on
    Dask only the histograms come back)."""
    thetas = {k: dict(v) for k, v in thetas.items()}
    return chunks.reduce(functools.partial(fill_chunk, binning=binning, thetas=thetas))
