"""Evaluate a correctionlib correction by the names of its inputs, whatever POG wrote it.

POG files of different eras spell the same input differently (MUO: ``abseta`` or ``eta``; JME:
``JetEta``/``JetPt``/``Rho``; LUM: ``NumTrueInteractions``) and label variations differently (MUO
``nominal/systup/systdown``, BTV ``central/up/down``, JME ``nom/up/down``, LUM ``nominal/up/down``). The
caller gives physics quantities and a variation; this module matches them to the correction's inputs,
so pointing the config at an official file is the whole change.
"""

from __future__ import annotations

import functools

import correctionlib
import numpy as np

from zprime_grad.errors import UserError

# input name (lower case) -> the physics quantity it is
QUANTITY = {"abseta": "abseta", "eta": "eta", "jeteta": "eta", "pt": "pt", "jetpt": "pt", "rho": "rho",
            "numtrueinteractions": "ntrueint", "ntrueint": "ntrueint", "flavor": "flavour",
            "hadronflavour": "flavour", "working_point": "working_point", "wp": "working_point"}
# the string input that selects the variation, and how each POG labels nominal / up / down
VARIATION_INPUTS = ("scale_factors", "systematic", "weights", "valtype")
LABELS = {"nominal": ("nominal", "central", "nom", "sf"), "up": ("systup", "up"), "down": ("systdown", "down")}


@functools.lru_cache(maxsize=8)
def correction_set(payload: str) -> correctionlib.CorrectionSet:
    """Parsed once per process (the payload travels with the processor; workers read no file)."""
    return correctionlib.CorrectionSet.from_string(payload)


@functools.lru_cache(maxsize=64)
def _labels(payload: str, name: str) -> dict[str, str]:
    """{nominal, up, down} → this correction's own labels, read from its category node."""
    import json

    correction = next(c for c in json.loads(payload)["corrections"] if c["name"] == name)
    keys: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("nodetype") == "category" and str(node.get("input", "")).lower() in VARIATION_INPUTS:
                keys.update(str(item["key"]) for item in node["content"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(correction["data"])
    found = {}
    for variation, options in LABELS.items():
        label = next((o for o in options if o in keys), None)
        if label is None and keys:
            raise UserError(f"correction {name!r}: no {variation} among its labels {sorted(keys)}")
        found[variation] = label
    return found


def evaluate(payload: str, name: str, variation: str = "nominal", **quantities) -> np.ndarray:
    """``name`` at ``quantities`` (arrays; eta gives abseta too) for ``variation`` in nominal/up/down."""
    cset = correction_set(payload)
    if name not in cset:
        raise UserError(f"correction {name!r} is not among the loaded corrections ({', '.join(cset.keys())})")
    correction = cset[name]
    given = dict(quantities)
    if "eta" in given and "abseta" not in given:
        given["abseta"] = np.abs(given["eta"])
    args = []
    for item in correction.inputs:
        key = item.name.lower()
        if key in VARIATION_INPUTS:
            args.append(_labels(payload, name)[variation])
        elif QUANTITY.get(key) in given:
            value = given[QUANTITY[key]]
            args.append(value if isinstance(value, str) else
                        np.asarray(value, np.int64 if item.type == "int" else np.float64))
        else:
            raise UserError(f"correction {name!r}: input {item.name!r} is not one this analysis provides "
                            f"({', '.join(sorted(given))})")
    return np.asarray(correction.evaluate(*args), np.float64)
