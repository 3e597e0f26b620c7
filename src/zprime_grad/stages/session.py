"""One run's cluster connection and chunks, handed to every stage.

A `Session` is built once per run, CLI command or notebook from the config. It is the only place that
opens a cluster (``cluster.kind`` scheduler / gateway, a ``--scheduler`` address, or the ``dask``
backend on a LocalCluster), and it turns inputs into the chunk source every stage takes
(`zprime_grad.chunks`): on a cluster the skim keeps the chunks **in worker memory** and the
optimisation, the validation and the bootstrap run next to them, the driver writing only small
reports. Nothing needs a filesystem shared by the driver and the workers, and a lost worker's chunks
are recomputed from their lineage (files → chunk). In-process (no cluster) the skim is written to
``OUT/skim`` and reused by the next run with the same config and inputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zprime_grad import atomic, terminal

if TYPE_CHECKING:
    from zprime_grad.chunks import DaskChunks, LocalChunks
    from zprime_grad.config import Config

log = logging.getLogger(__name__)


class Session:
    """``with Session(config, scheduler=..., workers=..., backend=...) as session:`` then
    ``chunks = session.skim(fileset, out / "skim")`` (or ``session.load(skim_dir)``): the chunks that
    `optimise`, `validate` and `train` take."""

    def __init__(self, config: Config, *, scheduler: str | None = None, workers: int | None = None,
                 backend: str | None = None, client=None):
        """``client``: a Dask client the caller already holds (e.g. a facility notebook's); the session
        uses it and leaves it open."""
        from zprime_grad.cluster import resolve

        self.config = config
        self.settings = resolve(config, scheduler=scheduler, workers=workers)
        self.workers = workers
        backend = backend or config.optimise.backend
        self.distributed = client is not None or backend == "dask" or self.settings.kind != "local"
        self.backend = "dask" if self.distributed else backend
        self.client = client
        self._borrowed = client is not None
        self._owned = None
        self._sources: list = []

    @property
    def executor(self) -> str | None:
        """The coffea executor for reading files: ``dask`` on a cluster, else the configured one."""
        return "dask" if self.distributed else None

    def __enter__(self) -> "Session":
        if self.distributed and self.client is None:
            from zprime_grad.cluster import open_cluster

            self.client, self._owned = open_cluster(self.settings)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for source in self._sources:
            source.close()
        self._sources = []
        if self.client is not None and not self._borrowed:
            self.client.close()
        self.client = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def _keep(self, source):
        self._sources.append(source)
        return source

    # ------------------------------------------------------------------------------------ inputs
    def skim(self, fileset, out: Path | None = None, *, progress: bool | None = None,
             **skim_overrides) -> LocalChunks | DaskChunks:
        """Skim ``fileset``. In-process: to the skim directory ``out`` (reused when config and inputs are
        unchanged) or, with ``out=None``, in memory. On a cluster: chunks resident on the workers, with
        ``out/skim.json`` (if ``out``) the driver's report of them. ``skim_overrides``: ``skim`` fields."""
        from zprime_grad.chunks import LocalChunks
        from zprime_grad.skim.pipeline import run_skim, skim_options, skim_to_directory

        requested = skim_overrides.pop("executor", None)
        executor = self.executor or requested or self.config.skim.executor
        if executor == "dask" and not self.distributed:  # no cluster in this session: coffea's process pool
            executor = "futures"
        options = skim_options(self.config, executor=executor, workers=self.workers, **skim_overrides)
        if self.distributed:
            return self._skim_resident(fileset, out, options, progress)
        if options.persist:
            terminal.say("skim: skim.persist is for cluster runs; in this process the skim is cached in OUT/skim")
        if out is None:
            return self._keep(LocalChunks(run_skim(self.config, fileset, options, progress=progress).chunks,
                                          self.config.optimise.fan_in))
        _, reused = skim_to_directory(self.config, fileset, out, options, progress=progress)
        log.info("skim -> %s%s", out, " (reused)" if reused else "")
        return self.load(out)

    def chunks(self, *, columns=None, fileset=None) -> LocalChunks | DaskChunks:
        """A subcommand's chunks: a finished skim directory (``--columns``) or a fresh in-memory skim."""
        return self.load(columns) if columns is not None else self.skim(fileset)

    def load(self, skim_dir) -> LocalChunks | DaskChunks:
        """The chunks of a finished skim directory (``--columns``): read here, or by the workers; a skim made
        with another analysis (luminosity, processor, era, config hash) is refused first."""
        from zprime_grad.chunks import DaskChunks, LocalChunks
        from zprime_grad.skim.pipeline import check_skim_matches

        check_skim_matches(self.config, skim_dir)
        fan_in = self.config.optimise.fan_in
        if self.distributed:
            return self._keep(DaskChunks.from_directory(self.client, skim_dir, fan_in))
        return self._keep(LocalChunks.from_directory(skim_dir, fan_in))

    def fileset(self, fileset, *, mode: str = "runner", executor: str | None = None,
                chunksize: int | None = None):
        """A fileset for a validation that reads the files itself (coffea Runner / dask-awkward)."""
        from zprime_grad.errors import UserError
        from zprime_grad.validate.fill import FilesetInput

        executor = self.executor or executor or self.config.skim.executor
        if executor == "dask" and self.client is None:
            raise UserError("validate: the dask executor needs a cluster (--scheduler, or the dask backend)")
        return FilesetInput(fileset, executor, self.client, self.workers or self.config.skim.workers,
                            chunksize, mode)

    def _skim_resident(self, fileset, out: Path | None, options, progress) -> DaskChunks:
        from zprime_grad.chunks import DaskChunks
        from zprime_grad.skim import persist, store
        from zprime_grad.skim.fileset import load_fileset
        from zprime_grad.skim.pipeline import run_skim, skim_cache_key, skim_report

        start = time.perf_counter()
        inputs = load_fileset(fileset)
        key = skim_cache_key(self.config, options, inputs)
        fan_in = self.config.optimise.fan_in
        report = self._on_a_worker(persist.cached_report, options.persist, key) if options.persist else None
        if report is not None:  # a persisted skim of the same config and inputs: the workers read it
            urls = [persist.join(options.persist, c["path"]) for c in report["columns"]]
            sums = [c.get("sha256") for c in report["columns"]]  # each chunk verified as a worker reads it
            chunks = self._keep(DaskChunks(self.client, self.client.map(persist.load_chunk, urls, sums, pure=False),
                                           fan_in=fan_in))
            report = {**report, "reused_from": options.persist}
            terminal.say(f"skim: reused {len(chunks)} chunks persisted at {options.persist}")
        else:
            resident = run_skim(self.config, inputs, options, client=self.client, progress=progress)
            resident.sort_like_files()  # the order of a skim directory's chunks: the same sums as a local run
            chunks = self._keep(DaskChunks(self.client, resident.futures, fan_in=fan_in))
            written = []  # no column files: a later run skims again (store.cached_report never reuses it)
            if options.persist:
                self._on_a_worker(persist.remove_report, options.persist)
                written = self.client.gather(self.client.map(persist.write_chunk, resident.futures,
                                                             base=options.persist, pure=False))
            report = skim_report(self.config, options, key, resident, time.perf_counter() - start, columns=written)
            if options.persist:
                report["persisted"] = self._on_a_worker(persist.write_report, options.persist, report)
            terminal.say(f"skim: {len(chunks)} chunks resident on the workers"
                         + (f", persisted at {options.persist}" if options.persist else ""))
        if out is not None:
            report["resident"] = True
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic.write_json(Path(out) / store.REPORT, report, sort_keys=True)
        log.info("skim -> %d chunks resident on the workers", len(chunks))
        return chunks

    def _on_a_worker(self, func, *args):
        return self.client.submit(func, *args, pure=False).result()
