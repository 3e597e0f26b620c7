"""The era table: what changes with the CMS data-taking era, read from ``data/eras.yaml``.

PocketCoffea's rule: the era is configuration, not code. The processor asks the era for its trigger
paths, tagger branch and working points, MET flavour, jet-ID bit, rho branch and correction names; the
config picks the era (``analysis.era``) and may override the tagger and any correction name.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

WORKING_POINTS = ("L", "M", "T")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tagger(_Frozen):
    """An AK4 b tagger: its NanoAOD ``Jet_`` branch, working points, and BTV fixed-WP SF corrections."""

    branch: str
    wp: dict[Literal["L", "M", "T"], float]
    sf: tuple[str, str] = Field(description="BTV corrections for (b and c jets, light jets)")

    @model_validator(mode="after")
    def _ordered(self) -> "Tagger":
        values = [self.wp[k] for k in WORKING_POINTS if k in self.wp]
        if any(b <= a for a, b in zip(values, values[1:])) or any(not 0 < v < 1 for v in values):
            raise ValueError(f"working points of {self.branch} must rise L < M < T inside (0, 1): {self.wp}")
        return self


CORRECTION_KINDS = ("muon", "pileup", "jes_jet", "jes_fatjet", "jer_resolution", "jer_sf")


class CorrectionKeys(_Frozen):
    """Names of the corrections in the POG files (muon: a product of factors, e.g. ID × isolation)."""

    muon: tuple[str, ...]
    pileup: str
    jes_jet: str
    jes_fatjet: str
    jer_resolution: str
    jer_sf: str


class Era(_Frozen):
    name: str
    run: Literal[2, 3]
    lumi_pb: float = Field(gt=0)
    lumi_uncertainty: float = Field(ge=0, lt=1)
    triggers: tuple[str, ...] = Field(min_length=1)
    taggers: dict[str, Tagger] = Field(min_length=1)
    tagger: str = Field(description="the default tagger of this era")
    top_tagger: tuple[str, ...] = Field(min_length=1, description="FatJet_ score branch, in order of preference")
    met: tuple[str, ...] = Field(min_length=1, description="MET collection, in order of preference")
    jet_id_tight_bit: int = Field(gt=0)
    rho: tuple[str, ...] = Field(min_length=1)
    corrections: CorrectionKeys
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="initial values of optimisable thresholds this era fixes")

    @model_validator(mode="after")
    def _tagger_known(self) -> "Era":
        if self.tagger not in self.taggers:
            raise ValueError(f"era {self.name}: default tagger {self.tagger!r} is not among {sorted(self.taggers)}")
        return self

    def b_tagger(self, name: str | None = None) -> Tagger:
        return self.taggers[name or self.tagger]

    def initial_thresholds(self, tagger: str | None = None) -> dict[str, float]:
        """θ₀ of the thresholds the era fixes: the b tag starts at the tagger's medium WP unless declared."""
        return {"btag_threshold": self.b_tagger(tagger).wp["M"], **self.thresholds}


@functools.cache
def table() -> dict[str, Era]:
    raw = yaml.safe_load((files("zprime_grad.data") / "eras.yaml").read_text())
    try:
        return {str(name): Era.model_validate({"name": str(name), **entry}) for name, entry in raw.items()}
    except ValidationError as err:  # the packaged table itself is wrong: a bug, not a user error
        raise RuntimeError(f"zprime_grad/data/eras.yaml: {err}") from None


def names() -> tuple[str, ...]:
    return tuple(table())


def era(name: str) -> Era:
    known = table()
    if name not in known:
        raise KeyError(f"unknown era {name!r} (known: {', '.join(known)})")
    return known[name]
