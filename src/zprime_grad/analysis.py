"""The notebook-facing entry point: ``Analysis.from_yaml(path).skim(fileset, executor=...)``.

A thin shell over the stage modules; later stages add ``.optimise()`` and ``.validate()``.
"""

from __future__ import annotations

from pathlib import Path

from zprime_grad.config import Config, load_config


class Analysis:
    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def from_yaml(cls, path: str | Path | None = None) -> "Analysis":
        return cls(load_config(path))

    def processor(self, **skim_overrides):
        """The configured coffea processor (found through the ``zprime_grad.processors`` entry points)."""
        from zprime_grad.skim.pipeline import make_processor, skim_options

        return make_processor(self.config, skim_options(self.config, **skim_overrides))

    def skim(self, fileset=None, executor: str | None = None, *, client=None, **skim_overrides):
        """Skim a coffea fileset (dict or JSON path; default: the config's ``fileset:``).

        ``iterative``/``futures``: returns a `SkimResult` with the ColumnChunks in this process.
        ``dask``: returns `ResidentChunks` — futures of chunks kept in worker memory plus small
        summaries; pass ``client=`` to use an existing cluster (else a LocalCluster of ``workers`` is
        started and closed with the handle: use it as a context manager or call ``.close()``).
        Other keywords override the config's ``skim`` section (workers, chunksize, scheduler …).
        """
        from zprime_grad.skim.pipeline import run_skim, skim_options

        options = skim_options(self.config, executor=executor, **skim_overrides)
        return run_skim(self.config, self._fileset(fileset), options, client=client)

    def _fileset(self, fileset):
        if fileset is not None:
            return fileset
        if self.config.fileset is None:
            from zprime_grad.errors import UserError

            raise UserError(f"{self.config.source or 'config'}: no fileset given and no 'fileset:' in the config")
        from zprime_grad.stages.run import configured_fileset

        return configured_fileset(self.config)

    def skim_to_directory(self, fileset, out, executor: str | None = None, **skim_overrides) -> dict:
        """Skim to ``out/columns/`` + ``out/skim.json`` (reused when unchanged); returns the report."""
        from zprime_grad.skim.pipeline import skim_options, skim_to_directory

        report, _ = skim_to_directory(self.config, fileset, out,
                                      skim_options(self.config, executor=executor, **skim_overrides))
        return report

    def optimise(self, columns=None, *, fileset=None, out="outputs/optimise", backend: str | None = None,
                 client=None, **options) -> dict:
        """Optimise the cuts (``zprime_grad.optimise``); returns the ``params.json`` payload.

        ``columns``: a skim directory, or what ``.skim`` returned (chunks here, or resident on Dask);
        or ``fileset=`` to skim first. Other keywords: workers, scheduler, epochs, resume, gradient,
        ``progress`` (a tqdm bar), ``on_epoch``: called after every epoch (and after ``optimisation.json``
        is rewritten) with the loop state; ``state.history[-1]`` is that epoch's record (``epoch``, ``theta``,
        ``z_train``, ``z_valid``, ``grad_norm``, ``rejected`` …), e.g. for a live plot in a notebook.
        """
        from zprime_grad.optimise.driver import optimise

        return optimise(self.config, out=out, columns=columns, fileset=fileset, backend=backend, client=client,
                        **options)

    def validate(self, params, columns=None, *, fileset=None, out="outputs/validate", executor: str | None = None,
                 client=None, **options) -> dict:
        """Check θ* (``params``: a params.json path or the dict ``.optimise`` returned) against the baseline
        as hard cuts on the held-out (odd) events with hist/cabinetry/pyhf (``zprime_grad.validate``);
        writes ``out/validation.json`` and returns it. ``columns``: a skim directory or what ``.skim``
        returned; or ``fileset=`` (coffea Runner on ``executor``). Other keywords: workers, scheduler, chunksize.
        """
        from zprime_grad.validate import validate

        return validate(self.config, params=params, out=out, columns=columns, fileset=fileset, executor=executor,
                        client=client, **options)
