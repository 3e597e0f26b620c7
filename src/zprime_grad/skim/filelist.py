"""A coffea fileset from a list of NanoAOD files with event counts (the published analysis' ``nanoaods.json``
layout: ``{sample: {variation: {"files": [{"path", "nevts", ...}], ...}}}``) and a samples table that
says what each sample is (process, cross section, data or MC).

The fileset names files by their URLs (``root://…``), so it is the same on every machine; Σ genWeight is
not taken from the list (its weighted counts are not documented) but from the files' Runs trees when
the skim starts (`zprime_grad.skim.fileset.fill_sumw`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zprime_grad import atomic
from zprime_grad.errors import UserError


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    process: str = Field(min_length=1)
    xsec_pb: float | None = Field(None, gt=0, allow_inf_nan=False, description="MC cross section (pb)")
    is_data: bool = False

    @model_validator(mode="after")
    def _mc_has_a_cross_section(self) -> "Sample":
        if not self.is_data and self.xsec_pb is None:
            raise ValueError("an MC sample needs xsec_pb")
        return self


def load_samples(path: str | Path) -> dict[str, Sample]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read the samples table ({err})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: the samples table must map sample names to {{process, xsec_pb, is_data}}")
    out = {}
    for name, entry in raw.items():
        try:
            out[str(name)] = Sample.model_validate(entry)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{path}: sample {name}{'.' + field if field else ''}: "
                            f"{first['msg'].removeprefix('Value error, ')}") from None
    return out


def _files(name: str, variation: str, entry, source: str) -> list[dict]:
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, list) or not files:
        raise UserError(f"{source}: {name}.{variation}: no 'files' list")
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise UserError(f"{source}: {name}.{variation}.files[{i}]: needs a 'path'")
        n = f.get("nevts")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise UserError(f"{source}: {name}.{variation}.files[{i}].nevts: a non-negative integer (got {n!r})")
    return files


def fileset_from_list(file_list: str | Path, samples: dict[str, Sample], *, max_files: int | None = None,
                      treename: str = "Events") -> dict:
    """``{dataset: {"files": {url: tree}, "metadata": {...}}}``; datasets ``<sample>`` (nominal) or
    ``<sample>__<variation>``. A sample of the list that the table does not describe is an error."""
    source = str(file_list)
    try:
        listing = json.loads(Path(file_list).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{source}: cannot read the file list ({err})") from None
    if not isinstance(listing, dict):
        raise UserError(f"{source}: expected {{sample: {{variation: {{files: [...]}}}}}}")
    unknown = sorted(set(listing) - set(samples))
    if unknown:
        raise UserError(f"{source}: samples {unknown} are not in the samples table ({', '.join(samples)})")
    fileset = {}
    for name in sorted(listing):
        sample = samples[name]
        for variation, entry in sorted(listing[name].items()):
            files = _files(name, variation, entry, source)[: max_files or None]
            metadata = {"process": sample.process, "variation": variation, "is_data": sample.is_data,
                        "nevts": sum(int(f.get("nevts") or 0) for f in files)}
            if not sample.is_data:
                metadata["xsec"] = sample.xsec_pb
            dataset = name if variation == "nominal" else f"{name}__{variation}"
            fileset[dataset] = {"files": {f["path"]: treename for f in files}, "metadata": metadata}
    return fileset


def write_fileset(fileset: dict, out: str | Path) -> Path:
    out = Path(out)
    atomic.write_json(out, fileset)
    return out


def summary(fileset: dict) -> str:
    files = sum(len(d["files"]) for d in fileset.values())
    events = sum(d["metadata"]["nevts"] for d in fileset.values())
    return f"{len(fileset)} datasets, {files} files, {events:,} events"
