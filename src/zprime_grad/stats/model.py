"""``Model``: a pyhf spec bound to the JAX likelihood, with jitted, template-differentiable inference.

A ``Model`` owns the static ``Structure`` and the spec's nominal templates. Every inference method takes
an optional ``templates`` pytree (layout in ``zprime_grad.stats.spec``); omitted, the spec's own
templates are used. The jitted kernels are module-level functions keyed on the hashable structure, so
models with the same structure share compiled code.

Templates arguments: ``None`` (the spec's), a templates pytree, or its packed vector (``model.pack``).
Data arguments: ``None`` means the spec's observations; otherwise a ``{channel: counts}`` mapping or
a main-measurement vector in pyhf bin order (channels sorted by name). Auxiliary data are nominal.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from zprime_grad.errors import UserError
from zprime_grad.stats import infer
from zprime_grad.stats import likelihood as lh
from zprime_grad.stats.fit import FitOptions
from zprime_grad.stats.spec import Packing, Structure, load_spec, parse_spec, write_spec

Array = jax.Array


# ------------------------------------------------------------------------------------- jitted kernels
# ``packing`` is None for a templates pytree, or the static ``Packing`` of a flat templates vector.


def _prepare(structure, packing, templates) -> lh.Prepared:
    if packing is not None:
        templates = packing.unpack(templates)
    return lh.prepare(structure, templates)


@partial(jax.jit, static_argnames=("structure", "packing", "options", "gradient"))
def _z_asimov(structure, packing, templates, options, gradient):
    prep = _prepare(structure, packing, templates)
    return infer.discovery_significance_asimov(structure, prep, options=options, gradient=gradient)


@partial(jax.jit, static_argnames=("structure", "packing", "options"))
def _discovery_observed(structure, packing, templates, main, options):
    prep = _prepare(structure, packing, templates)
    return infer.discovery_observed(structure, prep, main, infer.nominal_aux(structure), options=options)


@partial(jax.jit, static_argnames=("structure", "packing", "options"))
def _profile(structure, packing, templates, main, poi_value, fix_poi, options):
    prep = _prepare(structure, packing, templates)
    fit = infer.profile(structure, prep, main, infer.nominal_aux(structure), poi_value, fix_poi=fix_poi, options=options)
    return fit, lh.to_pyhf_values(structure, prep, fit.x)


@partial(jax.jit, static_argnames=("structure", "packing", "options"))
def _expected_cls(structure, packing, templates, mu, options):
    return infer.expected_cls(structure, _prepare(structure, packing, templates), mu, options=options)


@partial(jax.jit, static_argnames=("structure", "packing", "options"))
def _cls_observed(structure, packing, templates, mu, main, options):
    prep = _prepare(structure, packing, templates)
    return infer.cls_observed(structure, prep, mu, main, infer.nominal_aux(structure), options=options)


@partial(jax.jit, static_argnames=("structure", "packing"))
def _evaluate(structure, packing, templates, x, main, aux):
    """Everything cheap at a given point, in one compiled call: logpdf, expected yields, pyhf values."""
    prep = _prepare(structure, packing, templates)
    return (lh.logpdf(structure, prep, x, main, aux), lh.expected_main(structure, prep, x),
            lh.to_pyhf_values(structure, prep, x))


@partial(jax.jit, static_argnames=("structure", "packing"))
def _asimov(structure, packing, templates, poi_value):
    return infer.asimov_data(structure, _prepare(structure, packing, templates), poi_value)


# ---------------------------------------------------------------------------------------------- Model


class Model:
    """A HistFactory model with pyhf semantics whose templates are traced JAX inputs."""

    def __init__(self, structure: Structure, templates, observations=None, spec: Mapping | None = None,
                 options: FitOptions = FitOptions()):
        self.structure = structure
        self._templates = jax.tree.map(lambda a: jnp.asarray(a, float), templates)
        self.packing = Packing.of(self._templates)
        self._observations = observations
        self._spec = spec
        self.options = options

    # --------------------------------------------------------------------------------- construction

    @classmethod
    def from_pyhf(cls, spec: Mapping, *, measurement: str | None = None, poi: str | None = None,
                  source: str = "spec", options: FitOptions = FitOptions()) -> "Model":
        """Build from a pyhf workspace (or model) spec dict; invalid specs raise ``UserError``."""
        structure, templates, observations = parse_spec(spec, measurement=measurement, poi=poi, source=source)
        return cls(structure, templates, observations, spec, options)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "Model":
        """Read a pyhf workspace JSON file."""
        return cls.from_pyhf(load_spec(path), source=str(path), **kwargs)

    def to_pyhf(self, templates=None, observations: Mapping | None = None) -> dict:
        """The spec as a pyhf workspace dict, with ``templates`` (default: nominal) written into it.

        Observations: the given ones, else the spec's, else the mu = 1 Asimov main data.
        """
        packing, templates = self._t(templates)
        templates = templates if packing is None else packing.unpack(templates)
        if observations is None:
            observations = self._observations
        if observations is None:
            _, main, _ = self.asimov_data(1.0, templates)
            observations = self.split_channels(main)
        return write_spec(self._spec, self.structure, jax.device_get(templates), observations)

    # -------------------------------------------------------------------------------------- accessors

    def nominal_templates(self):
        """The spec's templates as a pytree channel -> sample -> arrays (see ``stats.spec``)."""
        return jax.tree.map(lambda a: a, self._templates)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.structure.parameters)

    def parameter_slice(self, name: str) -> slice:
        return self.structure.parameter(name).slice

    @property
    def poi(self) -> str:
        return self.structure.poi

    def pack(self, templates=None) -> Array:
        """Templates pytree -> flat vector (see ``stats.spec.Packing``); every method accepts either."""
        return self.packing.pack(self._templates if templates is None else templates)

    def unpack(self, vector: Array):
        return self.packing.unpack(vector)

    def _t(self, templates) -> tuple:
        """``(packing or None, templates)`` for the kernels: nominal, a pytree, or a packed vector."""
        if templates is None:
            return None, self._templates
        if isinstance(templates, (jax.Array, np.ndarray)) and np.ndim(templates) == 1:
            if templates.shape[0] != self.packing.size:
                raise UserError(f"packed templates: expected {self.packing.size} values, got {templates.shape[0]}")
            return self.packing, templates
        return None, templates

    def prepare(self, templates=None) -> lh.Prepared:
        return _prepare(self.structure, *self._t(templates))

    def init_parameters(self, templates=None) -> Array:
        """pyhf's suggested init in the fit parametrisation (see ``stats.likelihood``)."""
        return infer.start_parameters(self.structure, self.prepare(templates))

    def _evaluate(self, x, data, templates, aux):
        aux = infer.nominal_aux(self.structure) if aux is None else jnp.asarray(aux, float)
        main = jnp.zeros(self.structure.n_bins) if data is False else self.main_data(data)
        return _evaluate(self.structure, *self._t(templates), jnp.asarray(x, float), main, aux)

    def pyhf_parameters(self, x: Array, templates=None) -> dict[str, Array]:
        """Parameter values in pyhf units, by name."""
        return self._evaluate(x, False, templates, None)[2]

    def expected_data(self, x: Array, templates=None) -> Array:
        """Expected main-measurement yields (pyhf bin order) at fit parameters ``x``."""
        return self._evaluate(x, False, templates, None)[1]

    def logpdf(self, x: Array, data=None, templates=None, aux: Array | None = None) -> Array:
        """log L at fit parameters ``x``; equals pyhf's ``logpdf`` at ``pyhf_parameters(x)``."""
        return self._evaluate(x, data, templates, aux)[0]

    def asimov_data(self, poi_value: float = 1.0, templates=None) -> tuple[Array, Array, Array]:
        """``(x, main, aux)``: Asimov data at the suggested init with the POI set, and that point."""
        return _asimov(self.structure, *self._t(templates), jnp.asarray(poi_value, float))

    def split_channels(self, main: Array) -> dict[str, np.ndarray]:
        main = np.asarray(main, float)
        return {ch: main[self.structure.channel_slice(ch)] for ch in self.structure.channels}

    def main_data(self, data=None) -> Array:
        """Main-measurement vector from ``None`` (spec observations), a channel mapping, or a vector."""
        if data is None:
            if self._observations is None:
                raise UserError("the spec has no observations: pass data= explicitly")
            data = self._observations
        if isinstance(data, Mapping):
            missing = [ch for ch in self.structure.channels if ch not in data]
            if missing:
                raise UserError(f"data: no counts for channels {missing}")
            data = jnp.concatenate([jnp.asarray(data[ch], float).reshape(-1) for ch in self.structure.channels])
        data = jnp.asarray(data, float)
        if data.shape != (self.structure.n_bins,):
            raise UserError(f"data: expected {self.structure.n_bins} main-measurement bins, got shape {data.shape}")
        return data

    # -------------------------------------------------------------------------------------- inference

    def discovery_significance(self, templates=None, *, gradient: infer.Gradient = "envelope") -> Array:
        """Expected Z0 = sqrt(q0) on the mu = 1 Asimov data; a JAX scalar differentiable in ``templates``."""
        return _z_asimov(self.structure, *self._t(templates), self.options, gradient)

    def discovery_q0(self, templates=None) -> Array:
        """Expected q0 on the mu = 1 Asimov data (clipped at 0): Z0 squared, from the same compiled kernel."""
        return self.discovery_significance(templates) ** 2

    def discovery_observed(self, data=None, templates=None) -> infer.Discovery:
        """Observed discovery test: ``Discovery(Z, q0, mu_hat, x_hat)`` (differentiable in ``templates``)."""
        return _discovery_observed(self.structure, *self._t(templates), self.main_data(data), self.options)

    def fit(self, data=None, templates=None, *, poi_value: float | None = None) -> dict[str, Any]:
        """Maximum-likelihood fit (free, or with the POI fixed): ``{"x", "nll", "mu_hat", "parameters"}``."""
        fixed = jnp.asarray(poi_value is not None)
        profile, values = _profile(self.structure, *self._t(templates), self.main_data(data),
                                   jnp.asarray(0.0 if poi_value is None else poi_value, float), fixed, self.options)
        return {"x": profile.x, "nll": profile.nll, "mu_hat": profile.x[self.structure.poi_index], "parameters": values}

    def expected_cls(self, mu: float | Array, templates=None) -> Array:
        """Expected CLs band (pyhf order, see ``stats.infer``) from the nominal background-only Asimov data."""
        return _expected_cls(self.structure, *self._t(templates), jnp.asarray(mu, float), self.options)

    def cls(self, mu: float | Array, data=None, templates=None) -> infer.CLs:
        """Observed CLs and expected band at ``mu`` on data, as ``pyhf.infer.hypotest(test_stat="qtilde")``."""
        return _cls_observed(self.structure, *self._t(templates), jnp.asarray(mu, float), self.main_data(data),
                             self.options)

    def upper_limit(self, data=None, templates=None, *, level: float = 0.05, expected_only: bool = False,
                    rtol: float = 1e-8) -> dict[str, Any]:
        """Asymptotic CLs upper limits on the POI: ``{"observed": float | None, "expected": [5 floats]}``.

        Root-finding (Brent) on the host over jitted CLs evaluations; ``expected_only`` (or a spec without
        observations) uses the nominal background-only Asimov data and needs no observed data.
        """
        if expected_only or (data is None and self._observations is None):
            def curves(mu):
                return np.asarray(self.expected_cls(mu, templates)), None
        else:
            main = self.main_data(data)

            def curves(mu):
                result = self.cls(mu, main, templates)
                return np.asarray(result.expected), float(result.observed)

        cache: dict[float, tuple] = {}

        def at(mu):
            if mu not in cache:
                cache[mu] = curves(mu)
            return cache[mu]

        low, high = 0.0, max(self.structure.parameter(self.poi).bounds[0][1], 1.0)
        for _ in range(40):
            expected, observed = at(high)
            if max(expected.max(), observed if observed is not None else 0.0) < level:
                break
            high *= 2.0
        else:
            raise UserError(f"upper_limit: CLs stays above {level} up to {self.poi} = {high}")
        roots = [brentq(lambda m, i=i: at(m)[0][i] - level, low, high, rtol=rtol) for i in range(len(infer.N_SIGMA))]
        observed = None
        if at(high)[1] is not None:
            observed = brentq(lambda m: at(m)[1] - level, low, high, rtol=rtol)
        return {"observed": observed, "expected": roots}

    def __repr__(self) -> str:
        s = self.structure
        return (f"Model(channels={list(s.channels)}, bins={s.n_bins}, samples={len(s.rows)}, "
                f"parameters={s.n_parameters}, poi={s.poi!r})")

