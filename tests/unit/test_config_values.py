"""Every number where it enters (#18): the config's fields, the command line's options, a fileset's metadata
and a params.json are fuzzed with NaN, ±inf, 0, -1 and a huge value. Each case must be refused in one line
naming the field (option, key) — or be one of the acceptances listed below, each with its reason. The fields
are found by walking the config's models (and the parser's options, the metadata model), so a field added
later is fuzzed without touching this file, and a new acceptance must be argued here."""

from __future__ import annotations

import copy
import fnmatch
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from zprime_grad.cli import build_parser
from zprime_grad.config import Config, ConfigError, as_data, load_config, parse_config
from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import DatasetMetadata, load_fileset

REPO = Path(__file__).resolve().parents[2]
# the configs whose union holds every section: the default, a learned observable, a gateway with adapt
BASES = ("configs/zprime.yaml", "configs/zprime_nn.yaml", "configs/facility_gateway.yaml")
BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "0": 0, "-1": -1, "huge": "huge"}

# (field pattern, value label): accepted on purpose
LEGITIMATE = {
    ("analysis.lumi_uncertainty", "0"): "no luminosity systematic",
    ("generate.seed", "0"): "a seed", ("validation.seed", "0"): "a seed", ("models.*.train.seed", "0"): "a seed",
    ("scan.seed", "0"): "a seed",
    ("generate.samples.*.pthat_min", "0"): "no lower pT-hat cut (Pythia's default)",
    ("generate.samples.*.bias_pow", "0"): "documented: 0 switches biasing off",
    ("generate.data.signal_strength", "0"): "background-only pseudo-data (the default)",
    ("generate.data.muon_pt_min", "0"): "a stream filter without a muon threshold",
    ("generate.data.fatjet_pt_min", "0"): "a stream filter without a fat-jet threshold",
    ("optimise.epochs", "0"): "evaluate the declared cuts only", ("optimise.finetune.epochs", "0"): "likewise",
    ("models.*.train.epochs", "0"): "keep the initialised network",
    ("optimise.forward_max_params", "huge"): "always forward mode",
    ("optimise.range.0", "0"): "an observable range may start at 0", ("optimise.range.0", "-1"): "or below",
    ("optimise.relaxation.anneal_epochs", "0"): "the end values from the start",
    ("optimise.xsec_uncertainty.*", "0"): "no cross-section systematic",
    ("optimise.default_xsec_uncertainty", "0"): "no cross-section systematic (the AGC config)",
    ("optimise.background_floor", "0"): "no floor",
    ("optimise.patience", "huge"): "no early stopping", ("models.*.train.patience", "huge"): "no early stopping",
    ("optimise.min_delta", "0"): "any improvement counts", ("models.*.train.min_delta", "0"): "likewise",
    ("optimise.fan_in", "huge"): "one reduction level",
    ("optimise.finetune.threshold_step", "0"): "thresholds held while the weights train",
    ("optimise.networks.*.learning_rate", "0"): "documented: frozen weights",
    ("optimise.networks.*.bounds.0", "0"): "a score is >= 0",
    ("validation.bootstrap", "0"): "documented: no bootstrap", ("validation.toys", "0"): "documented: no toys",
    ("skim.retries", "0"): "no Dask retries",
    ("cluster.gateway.adapt.minimum", "0"): "an adaptive cluster may scale to zero",
}


def numeric_leaves(ann, value, path=()):
    """(path, int | float) of every number the model type ``ann`` holds in ``value`` (a config's data)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        yield from numeric_leaves(args[0], value, path)
    elif origin in (typing.Union, types.UnionType):
        for a in args:
            if a is not type(None):
                yield from numeric_leaves(a, value, path)
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        if isinstance(value, dict):
            for name, field in ann.model_fields.items():
                if not field.exclude:
                    yield from numeric_leaves(field.annotation, value.get(name), (*path, name))
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            yield from numeric_leaves(args[1], item, (*path, key))
    elif origin is tuple and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from numeric_leaves(args[0] if args[-1] is Ellipsis else args[i], item, (*path, i))
    elif ann in (int, float):
        yield path, ann


def schema_leaves(ann, path=(), seen=()):
    """The same leaves from the types alone (dict keys '*', tuple slots '#'): what must be covered."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        yield from schema_leaves(args[0], path, seen)
    elif origin in (typing.Union, types.UnionType):
        for a in args:
            yield from schema_leaves(a, path, seen)
    elif isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in seen:
        for name, field in ann.model_fields.items():
            if not field.exclude:
                yield from schema_leaves(field.annotation, (*path, name), (*seen, ann))
    elif origin is dict:
        yield from schema_leaves(args[1], (*path, "*"), seen)
    elif origin is tuple:
        for i, a in enumerate(args):
            if a is not Ellipsis:
                yield from schema_leaves(a, (*path, "#"), seen)
    elif ann in (int, float):
        yield path


def _generic(path) -> tuple:
    return tuple("#" if isinstance(k, int) else k for k in path)


def _cases():
    cases, covered = {}, set()
    for base in BASES:
        data = as_data(load_config(REPO / base))
        for path, kind in numeric_leaves(Config, data):
            cases.setdefault(path, (base, kind))
    return cases


CASES = _cases()


def _names(line: str, path: tuple) -> bool:
    """The error line names the field: ``field 'a.b.c'``, or an enclosing field whose message names the rest
    (a slice table naming its sample and key; a tuple shown whole)."""
    for n in range(len(path), 0, -1):
        head = f"field '{'.'.join(map(str, path[:n]))}'"
        if head in line and all(str(k) in line.split(head, 1)[1] for k in path[n:] if not isinstance(k, int)):
            return True
    return False


def _legitimate(name: str, label: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) and label == lab for pattern, lab in LEGITIMATE)


def test_every_numeric_field_of_the_config_models_is_fuzzed():
    covered = {_generic(p) for p in CASES}
    wanted = set(schema_leaves(Config))
    # the sample table's dict keys and other mappings appear as their keys in the data: compare generically
    covered_generic = {tuple("*" if w == "*" else c for c, w in zip(p, q)) for p in covered for q in wanted
                       if len(p) == len(q) and all(w in ("*", c) for c, w in zip(p, q))}
    assert wanted <= covered_generic, f"numeric fields in no base config: {sorted(wanted - covered_generic)}"
    assert len(CASES) > 100


@pytest.mark.parametrize("path", sorted(CASES, key=str), ids=lambda p: ".".join(map(str, p)))
def test_a_bad_number_in_any_config_field_is_refused_naming_it(path):
    base, kind = CASES[path]
    original = as_data(load_config(REPO / base))
    name = ".".join(map(str, path))
    for label, value in BAD.items():
        if value == "huge":
            value = 10**30 if kind is int else 1e300
        data = copy.deepcopy(original)
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        try:
            parse_config(data, "fuzz.yaml")
        except ConfigError as err:
            lines = str(err).splitlines()[1:]
            assert lines and all(_names(line, path) for line in lines), (name, label, str(err))
            assert all(len(line) < 300 for line in lines), "one line, no section dump"
        else:
            assert _legitimate(name, label), f"{name} = {value!r} ({label}) was accepted"


def test_every_documented_acceptance_still_happens():
    """An acceptance that no longer happens (the field now refuses it, or is gone) is removed from the list."""
    for pattern, label in LEGITIMATE:
        assert any(fnmatch.fnmatchcase(".".join(map(str, p)), pattern) for p in CASES), pattern


def test_an_empty_config_means_the_documented_defaults():
    """Model defaults are the values configs/zprime.yaml spells out; only the inputs have no default."""
    empty, default = parse_config({}, "empty.yaml"), load_config()
    for section in Config.model_fields:
        if section in ("generate", "fileset", "source"):
            continue
        assert getattr(empty, section) == getattr(default, section), section
    assert empty.generate is None and empty.fileset is None
    generate = default.generate.model_dump(exclude={"samples"})
    assert type(default.generate)(samples=default.generate.samples).model_dump(exclude={"samples"}) == generate
    partial = parse_config({"optimise": {"epochs": 3}}, "partial.yaml")
    assert partial.optimise == default.optimise.model_copy(update={"epochs": 3})


# ------------------------------------------------------------------------------------ command line
ACCEPTED_OPTIONS = {("--epochs", "0"): "evaluate the declared cuts", ("--seed", "0"): "a seed",
                    ("--kill-after-epoch", "0"): "test hook", ("--max-files", str(10**30)): "at most: every file"}


def _numeric_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, p in sub.choices.items():
        required = []
        for action in p._actions:
            if action.required and action.option_strings:
                required += [action.option_strings[0], "x"]
            elif not action.option_strings and action.nargs is None and action.dest not in ("help",):
                required += ["x"]
        for group in p._mutually_exclusive_groups:
            if group.required:
                required += [group._group_actions[0].option_strings[0], "x"]
        for action in p._actions:
            if action.option_strings and action.type is not None and action.type is not str:
                yield command, required, action


OPTIONS = list(_numeric_options())


def test_no_option_takes_an_unchecked_number():
    assert OPTIONS
    unchecked = [(c, a.option_strings[0]) for c, _, a in OPTIONS if a.type in (int, float)]
    assert not unchecked, f"options parsed with a bare int/float: {unchecked}"


@pytest.mark.parametrize("command, required, action", OPTIONS, ids=[f"{c} {a.option_strings[0]}" for c, _, a in OPTIONS])
def test_a_bad_number_on_the_command_line_is_refused_naming_the_option(command, required, action, capsys):
    option = action.option_strings[0]
    for label in ("nan", "inf", "-inf", "0", "-1", "1e30", str(10**30), "2.5", "ten"):
        try:
            build_parser().parse_args([command, *required, option, label])
        except SystemExit as exit:
            err = capsys.readouterr().err
            assert exit.code == 2 and f"argument {option}" in err.splitlines()[-1], (option, label, err)
        else:
            assert (option, label) in ACCEPTED_OPTIONS, f"{command} {option} {label} was accepted"


# ------------------------------------------------------------------------------------ fileset metadata
METADATA_BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "0": 0, "-1": -1, "huge": 1e300,
                "string": "1.0", "bool": True, "list": [1.0]}
METADATA_OK = {("nevents", "0"): "a generated dataset the stream filter emptied"}


@pytest.mark.parametrize("key", [k for k in DatasetMetadata.model_fields])
def test_a_bad_metadata_value_is_refused_naming_dataset_and_key(key):
    field = DatasetMetadata.model_fields[key]
    for label, value in ({"string": "false", "int": 0, "one": 1, "none": None} if field.annotation == bool
                         or "StrictBool" in str(field.annotation) else METADATA_BAD).items():
        if value is None:
            continue
        fileset = {"ds": {"files": ["x.root"], "metadata": {"xsec": 1.0, key: value}}}
        if key in ("process", "variation") and label in ("string",):
            continue  # a string is what these are
        try:
            load_fileset(fileset)
        except UserError as err:
            assert f"dataset 'ds': metadata '{key}'" in str(err) and "\n" not in str(err), (key, label, str(err))
        else:
            assert (key, label) in METADATA_OK, f"metadata {key} = {value!r} was accepted"


@pytest.mark.parametrize("entry", ["x.root", {"files": "x.root"}, {"files": [1]}, {"files": []},
                                   {"files": ["x.root"], "metadata": "xsec"}, {"files": ["x.root"], "treename": 3}])
def test_a_malformed_fileset_entry_is_one_line_naming_the_dataset(entry):
    with pytest.raises(UserError, match=r"^fileset: dataset 'ds': [^\n]+$"):
        load_fileset({"ds": entry})


# ------------------------------------------------------------------------------------ params.json
def test_a_params_file_with_a_bad_value_is_refused_naming_the_parameter(tmp_path):
    import json

    from zprime_grad.skim.pipeline import make_processor
    from zprime_grad.validate.driver import load_params

    declared = make_processor(load_config()).parameters()
    good = {name: p.init for name, p in declared.items()}
    assert load_params({"parameters": [{"name": k, "value": v} for k, v in good.items()]}, declared)[0] == good
    for name, p in declared.items():
        low, high = p.bounds
        for value in (float("nan"), float("inf"), float("-inf"), 1e300, low - 1e-6 * (high - low) - 1e-9,
                      high + 1e-6 * (high - low) + 1e-9, "0.5", True, None):
            path = tmp_path / "params.json"
            path.write_text(json.dumps({"parameters": [{"name": k, "value": value if k == name else v}
                                                       for k, v in good.items()]}))
            with pytest.raises(UserError, match=rf"params.json: parameter '{name}': .*\[{low}, {high}\]"):
                load_params(path, declared)
