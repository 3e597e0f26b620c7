"""One run's cluster connection and chunk source, handed to every stage.

A `Session` is built once per run (or notebook) from the config. On a Dask cluster (``cluster.kind``
scheduler / gateway, a ``--scheduler`` address, or the ``dask`` backend on a LocalCluster) it opens the
only client of the run, and its skim keeps the chunks **in worker memory** (`skim.resident`): the
optimisation, the validation and the bootstrap run next to them, and the driver writes only small
reports. Nothing needs a filesystem shared by the driver and the workers, and a lost worker's chunks are
recomputed from their lineage (files → chunk). In-process (no cluster) the skim is written to
``OUT/skim`` and reused by the next run with the same config and inputs, as before.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zprime_grad import atomic, terminal

if TYPE_CHECKING:
    from zprime_grad.config import Config

log = logging.getLogger(__name__)


class Session:
    """``with Session(config, scheduler=..., workers=..., backend=...) as session:`` then
    ``chunks = session.skim(fileset, out / "skim")``: a skim directory in-process, resident chunks on a
    cluster; either is what `optimise`, `validate` and `train` take as ``columns``."""

    def __init__(self, config: Config, *, scheduler: str | None = None, workers: int | None = None,
                 backend: str | None = None):
        from zprime_grad.cluster import resolve

        self.config = config
        self.settings = resolve(config, scheduler=scheduler, workers=workers)
        self.workers = workers
        self.scheduler = scheduler
        backend = backend or config.optimise.backend
        self.distributed = backend == "dask" or self.settings.kind != "local"
        self.backend = "dask" if self.distributed else backend
        self.client = None
        self._owned = None
        self._resident: list = []

    @property
    def executor(self) -> str | None:
        """The executor every stage uses: ``dask`` on a cluster, else each stage's configured one."""
        return "dask" if self.distributed else None

    def __enter__(self) -> "Session":
        if self.distributed:
            from zprime_grad.cluster import open_cluster

            self.client, self._owned = open_cluster(self.settings)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for chunks in self._resident:
            chunks.close()
        self._resident = []
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def skim(self, fileset, out: Path, *, progress: bool | None = None):
        """The run's chunks: ``out`` (a skim directory, cached) in-process; `ResidentChunks` on a cluster,
        with ``out/skim.json`` the driver's report of them (no column files: they stay on the workers)."""
        from zprime_grad.skim.pipeline import skim_options, skim_to_directory

        options = skim_options(self.config, executor=self.executor, workers=self.workers, scheduler=self.scheduler)
        if not self.distributed:
            _, reused = skim_to_directory(self.config, fileset, out, options, progress=progress)
            log.info("run: skim -> %s%s", out, " (reused)" if reused else "")
            return out
        return self._skim_resident(fileset, Path(out), options)

    def _skim_resident(self, fileset, out: Path, options):
        from zprime_grad.skim import store
        from zprime_grad.skim.fileset import load_fileset
        from zprime_grad.skim.pipeline import run_skim, skim_cache_key, skim_report

        start = time.perf_counter()
        inputs = load_fileset(fileset)
        chunks = run_skim(self.config, inputs, options, client=self.client)
        self._resident.append(chunks)
        chunks.sort_like_files()  # the order of a skim directory's chunks: the same sums as a local run
        # no column files: a later run skims again (store.cached_report never reuses this report)
        report = skim_report(self.config, options, skim_cache_key(self.config, options, inputs), chunks,
                             time.perf_counter() - start, columns=[])
        report["resident"] = True
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / store.REPORT, report, sort_keys=True)
        terminal.say(f"skim: {len(chunks)} chunks resident on the workers")
        log.info("run: skim -> %d chunks resident on the workers (report %s)", len(chunks), out / store.REPORT)
        return chunks
