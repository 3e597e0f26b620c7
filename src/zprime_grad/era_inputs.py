"""The analysis section resolved, on the driver, into what a processor needs for its era.

The era table gives names; this module finds the files: the corrections the processor evaluates are
cut out of the POG files (or the shipped one) into one small correctionlib JSON that travels with the
processor, and the golden JSON becomes a ``lumi.GoldenMask``. Workers read no file: at a facility they share
no filesystem with the driver.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import fsspec

from zprime_grad import eras
from zprime_grad.errors import UserError

SHIPPED_CORRECTIONS = str(files("zprime_grad.data") / "corrections.json")
SHIPPED_GOLDEN_JSON = str(files("zprime_grad.data") / "golden_generated.json")
OFF = "none"  # a correction file or golden JSON explicitly switched off
# which file (analysis.corrections.<pog>) holds each kind of correction
POG_OF = {"muon": "muon", "btag": "btag", "pileup": "pileup", "jes_jet": "jme", "jes_fatjet": "jme",
          "jer_resolution": "jme", "jer_sf": "jme"}


def resolve_path(value: str, source: str | None) -> str:
    """A config path: URLs and absolute paths as given, others relative to the config file."""
    if "://" in value or Path(value).is_absolute() or not source or not Path(source).exists():
        return value
    return str(Path(source).resolve().parent / value)


@dataclass(frozen=True)
class EraInputs:
    """Everything era-dependent a processor is built with (picklable, no open files)."""

    era: eras.Era
    tagger_name: str
    tagger: eras.Tagger
    keys: dict[str, tuple[str, ...]]           # kind -> correction names (several: a product)
    corrections_json: str = field(repr=False)  # the needed corrections only; "" when none
    off: frozenset[str] = frozenset()          # kinds switched off by the config
    golden_json: str | None = None             # the file the mask came from (None: no mask)
    mask: object | None = field(default=None, repr=False)  # lumi.GoldenMask
    mask_off: bool = False                     # the config said golden_json: none
    lumi_pb: float = 0.0

    def content_hash(self) -> str:
        """What the skim's numbers depend on here: the corrections' and the mask's content (never a path)."""
        mask = {str(run): bounds.tolist() for run, bounds in sorted(getattr(self.mask, "masks", {}).items())}
        payload = json.dumps({"corrections": self.corrections_json, "mask": mask, "off": sorted(self.off),
                              "mask_off": self.mask_off}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _read_json(location: str, field_name: str) -> dict:
    try:
        with fsspec.open(location, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{field_name}: {location}: cannot read a correctionlib JSON ({err})") from None


def correction_keys(analysis) -> dict[str, tuple[str, ...]]:
    """The era's correction names with the config's overrides; the b-tag SFs come from the tagger."""
    era = eras.era(analysis.era)
    keys = {kind: ((v,) if isinstance(v, str) else tuple(v)) for kind, v in era.corrections.model_dump().items()}
    keys.update({kind: ((v,) if isinstance(v, str) else tuple(v)) for kind, v in analysis.correction_keys.items()})
    keys["btag"] = tuple(era.b_tagger(analysis.tagger).sf)
    return keys


def extract_corrections(analysis, source: str | None, kinds) -> tuple[str, frozenset[str]]:
    """One correctionlib JSON holding the named corrections of ``kinds`` from their files; kinds whose
    file is ``none`` are returned as switched off. A name missing from its file is an error naming both."""
    keys = correction_keys(analysis)
    by_file: dict[str, list[tuple[str, str]]] = {}
    off = set()
    for kind in kinds:
        pog = POG_OF[kind]
        given = getattr(analysis.corrections, pog)
        if given is not None and given.lower() == OFF:
            off.add(kind)
            continue
        location = SHIPPED_CORRECTIONS if given is None else resolve_path(given, source)
        by_file.setdefault(location, []).extend((pog, name) for name in keys[kind])
    chosen, seen = [], set()
    for location, wanted in by_file.items():
        content = _read_json(location, f"analysis.corrections.{wanted[0][0]}")
        available = {c["name"]: c for c in content.get("corrections", [])}
        for pog, name in wanted:
            if name not in available:
                near = sorted(available)[:8]
                raise UserError(f"analysis.corrections.{pog}: {location} has no correction {name!r} "
                                f"(era {analysis.era}; it has {', '.join(near)}{' …' if len(available) > 8 else ''}); "
                                f"point the field at the POG file of this era or set analysis.correction_keys")
            if name not in seen:
                seen.add(name)
                chosen.append(available[name])
    payload = {"schema_version": 2, "description": "zprime_grad: the corrections this analysis evaluates",
               "corrections": sorted(chosen, key=lambda c: c["name"])}
    return json.dumps(payload, sort_keys=True), frozenset(off)


def golden_json(analysis, source: str | None) -> str | None:
    """The golden JSON data must pass: the config's, the package's own for generated data, else None."""
    given = analysis.golden_json
    if given is None:
        return SHIPPED_GOLDEN_JSON if analysis.era == "generated" else None
    if given.lower() == OFF:
        return None
    return resolve_path(given, source)


KINDS = ("muon", "btag", "pileup", "jes_jet", "jes_fatjet", "jer_resolution", "jer_sf")


def era_inputs(config) -> EraInputs:
    """Resolved once per analysis section and config location (the files are read on the first call)."""
    return _era_inputs(config.analysis.model_dump_json(), config.source)


@functools.lru_cache(maxsize=16)
def _era_inputs(analysis_json: str, source: str | None) -> EraInputs:
    from zprime_grad.config import AnalysisConfig
    from zprime_grad.lumi import lumi_mask

    analysis = AnalysisConfig.model_validate_json(analysis_json)
    kinds = KINDS
    era = eras.era(analysis.era)
    corrections_json, off = extract_corrections(analysis, source, kinds)
    golden = golden_json(analysis, source)
    mask_off = analysis.golden_json is not None and analysis.golden_json.lower() == OFF
    tagger = analysis.tagger or era.tagger
    return EraInputs(era=era, tagger_name=tagger, tagger=era.b_tagger(tagger), keys=correction_keys(analysis),
                     corrections_json=corrections_json, off=off, golden_json=golden,
                     mask=lumi_mask(golden) if golden else None, mask_off=mask_off, lumi_pb=float(analysis.lumi_pb))


@functools.cache
def default_inputs() -> EraInputs:
    """The generated era with the shipped files: a processor built without a config."""
    from zprime_grad.config import Config

    return era_inputs(Config())


def certified_lumi(analysis, source: str | None) -> float:
    """``analysis.lumi_csv``'s luminosity certified by the golden JSON (the config's lumi_pb then)."""
    from zprime_grad.lumi import certified_lumi_pb

    golden = golden_json(analysis, source)
    if golden is None:
        raise UserError("analysis.lumi_csv needs analysis.golden_json: the certified luminosity is that JSON's")
    return certified_lumi_pb(resolve_path(analysis.lumi_csv, source), golden)
