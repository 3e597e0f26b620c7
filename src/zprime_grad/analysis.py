"""The notebook-facing entry point: one `Analysis` holds the config and the run's `Session`.

    with Analysis.from_yaml("configs/zprime.yaml", backend="dask") as analysis:
        chunks = analysis.skim("data/generated/fileset.json")
        params = analysis.optimise(chunks, "outputs/optimise")
        summary = analysis.validate(chunks, "outputs/optimise/params.json", "outputs")

The session (and with it a cluster, if the config or the arguments ask for one) is opened on first use
and closed with the analysis; the chunks stay where they were skimmed between the calls.
"""

from __future__ import annotations

from pathlib import Path

from zprime_grad.config import Config, load_config, override


class Analysis:
    def __init__(self, config: Config, *, scheduler: str | None = None, workers: int | None = None,
                 backend: str | None = None, client=None):
        self.config = config
        self._session_args = {"scheduler": scheduler, "workers": workers, "backend": backend, "client": client}
        self._session = None

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, **session) -> "Analysis":
        """``session``: ``scheduler``, ``workers``, ``backend`` (``local`` | ``dask``) of the run's `Session`,
        or ``client``: a Dask client already open (left open)."""
        return cls(load_config(path), **session)

    @property
    def session(self):
        if self._session is None:
            from zprime_grad.stages.session import Session

            self._session = Session(self.config, **self._session_args).__enter__()
        return self._session

    @property
    def client(self):
        """The run's Dask client (None in-process)."""
        return self.session.client

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "Analysis":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def processor(self, **skim_overrides):
        """The configured coffea processor (found through the ``zprime_grad.processors`` entry points)."""
        from zprime_grad.skim.pipeline import make_processor, skim_options

        return make_processor(self.config, skim_options(self.config, **skim_overrides))

    def skim(self, fileset=None, out=None, **skim_overrides):
        """The chunks of a coffea fileset (dict or JSON path; default: the config's ``fileset:``): in this
        process, or resident in the workers' memory on a cluster. ``out``: also write (in-process) or report
        (cluster) the skim there. Other keywords override the config's ``skim`` section (chunksize …)."""
        return self.session.skim(self._fileset(fileset), out, **skim_overrides)

    def load(self, skim_dir):
        """The chunks of a finished skim directory (``zprime-grad skim --out DIR``)."""
        return self.session.load(skim_dir)

    def fileset(self, fileset=None, **options):
        """A fileset for a validation that reads the files itself (``mode``: runner | dask-awkward,
        ``executor``, ``chunksize``)."""
        return self.session.fileset(self._fileset(fileset), **options)

    def optimise(self, chunks, out="outputs/optimise", *, start=None, resume=False, progress=None, on_epoch=None,
                 **settings) -> dict:
        """Optimise the cuts on ``chunks`` (``zprime_grad.optimise``); returns the ``params.json`` payload.
        ``settings``: ``optimise`` fields for this call (epochs, gradient …). ``on_epoch`` is called after every
        epoch with the loop state; ``state.history[-1]`` is that epoch's record (``epoch``, ``theta``,
        ``z_train``, ``z_valid``, ``grad_norm``, ``rejected`` …), e.g. for a live plot in a notebook."""
        from zprime_grad.optimise.driver import optimise

        return optimise(override(self.config, optimise=settings), chunks, out, start=start, resume=resume,
                        progress=progress, on_epoch=on_epoch)

    def scan(self, chunks, out="outputs/scan", *, params=None, budget: int | None = None, methods=None) -> dict:
        """The black-box baseline: the same cuts searched without gradients on the training events, with
        ``budget`` evaluations per method (default: ``scan.budget``, else the gradient run's, from its
        ``params`` path); returns ``scan.json``'s content (each method's best in ``out/<method>/params.json``)."""
        from zprime_grad.errors import UserError
        from zprime_grad.scan import gradient_budget, scan

        budget = budget or self.config.scan.budget or (gradient_budget(params) if params is not None else None)
        if budget is None:
            raise UserError("scan: no budget: give params (the gradient run's params.json) or budget")
        return scan(self.config, chunks, out, budget=budget, methods=methods,
                    reuse_for=params if isinstance(params, (str, Path)) else None)

    def validate(self, chunks, params, out="outputs/validate", *, plots: bool | None = None,
                 compare=None) -> dict:
        """θ* (``params``: a params.json path or the dict ``.optimise`` returned) against the baseline as
        hard cuts on the held-out (odd) events of ``chunks`` (or ``.fileset(...)``) with hist/cabinetry/pyhf;
        ``compare``: ``{label: params}`` of other cuts (e.g. ``.scan``'s) validated beside them;
        writes ``out/validation.json`` and returns it."""
        from zprime_grad.validate import validate

        return validate(self.config, chunks, params, out, plots=plots, compare=compare)

    def train(self, chunks, out="outputs/train", *, names=None) -> dict:
        """Pre-train the config's ``models`` on ``chunks``; returns ``{name: network file}``."""
        from zprime_grad.learn.train import train_models

        return train_models(self.config, chunks, out, names=names)

    def _fileset(self, fileset):
        if fileset is not None:
            return fileset
        if self.config.fileset is None:
            from zprime_grad.errors import UserError

            raise UserError(f"{self.config.source or 'config'}: no fileset given and no 'fileset:' in the config")
        from zprime_grad.stages.run import configured_fileset

        return configured_fileset(self.config)
