"""The black-box baseline (`zprime_grad.scan`): the searches spend exactly their budget from θ₀ inside the
box, reproducibly; the scan's objective is the optimiser's objective in the hard-cut limit (checked against
the optimiser's own kernel at a near-step relaxation, the flow folded as its KDE folds it); a scan's best cuts go through the validation beside
θ* and the CLI refuses what it cannot do."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from zprime_grad.scan.search import Dimension, sobol, tpe

SPACE = [Dimension("a", 0.0, 10.0, 2.0), Dimension("b", -5.0, 5.0, 0.0)]


def peak(thetas):  # a smooth bump at (7, -2): a search with feedback finds it
    return [-((t["a"] - 7.0) ** 2) - (t["b"] + 2.0) ** 2 for t in thetas]


@pytest.mark.parametrize("search", [sobol, tpe])
def test_a_search_spends_its_budget_from_the_reference_inside_the_box_and_repeats(search):
    calls = []

    def evaluate(thetas):
        calls.append(len(thetas))
        return peak(thetas)

    trials = search(SPACE, 37, 8, evaluate, seed=3)
    assert len(trials) == 37 and sum(calls) == 37 and max(calls) <= 8
    assert trials[0]["theta"] == {"a": 2.0, "b": 0.0}  # the reference cuts first
    for t in trials:
        assert 0.0 <= t["theta"]["a"] <= 10.0 and -5.0 <= t["theta"]["b"] <= 5.0
    assert max(t["value"] for t in trials) > trials[0]["value"]
    again = search(SPACE, 37, 8, peak, seed=3)
    assert [t["theta"] for t in again] == [t["theta"] for t in trials]
    other = search(SPACE, 37, 8, peak, seed=4)
    assert [t["theta"] for t in other] != [t["theta"] for t in trials]


def test_tpe_uses_its_feedback_and_survives_failed_evaluations():
    def with_failures(thetas):
        return [-math.inf if t["a"] < 1.0 else v for t, v in zip(thetas, peak(thetas))]

    best_tpe = max(t["value"] for t in tpe(SPACE, 64, 4, with_failures, seed=0))
    best_sobol = max(t["value"] for t in sobol(SPACE, 64, 4, with_failures, seed=0))
    assert best_tpe > -1.0 and best_tpe >= best_sobol - 0.5


# ------------------------------------------------------------------------------- on the generated skim
@pytest.fixture(scope="module")
def chunks(generated, tmp_path_factory):
    from tests.optimise.test_optimise import skim_columns
    from zprime_grad.chunks import LocalChunks

    return LocalChunks.from_directory(skim_columns(generated, tmp_path_factory))


def test_the_scan_objective_is_the_optimisers_in_the_hard_cut_limit(generated, chunks):
    from zprime_grad.optimise.driver import build_problem
    from zprime_grad.optimise.contribution import primal_part
    from zprime_grad.scan.objective import HardObjective

    config = generated.config
    hard = HardObjective(config, chunks)
    problem = build_problem(config, chunks)
    theta0 = {p: v for p, v in zip(problem.layout.param_names, problem.theta0)}
    moved = {**theta0, "met_threshold": 70.0, "top_pt_threshold": 350.0}
    for theta in (theta0, moved):
        H = chunks.map_reduce(primal_part, layout=problem.layout, theta=np.array([theta[n] for n in problem.layout.param_names]),
                              relax=(1e6, 1e-6))["train"]  # near-step sigmoids, near-delta KDE
        soft_limit = problem.objective.value(H)
        assert hard([theta])[0] == pytest.approx(soft_limit, rel=1e-6)
    assert hard.evaluations == 2


def test_scan_writes_params_that_validate_reads_beside_theta_star(generated, chunks, tmp_path):
    from zprime_grad.config import override
    from zprime_grad.scan import scan
    from zprime_grad.validate.driver import validate

    config = override(generated.config, validation={"bootstrap": 10})
    result = scan(config, chunks, tmp_path / "scan", budget=12, methods=["sobol", "tpe"])
    assert set(result["methods"]) == {"sobol", "tpe"} and result["budget"] == 12
    for method, m in result["methods"].items():
        assert m["evaluations"] == 12 and m["value_train"] >= m["value_reference"]
        trials = json.loads((tmp_path / "scan" / method / "trials.json").read_text())["trials"]
        assert max(t["value"] for t in trials) == m["value_train"]
    # a scan's best as θ*, and both scans as comparisons: the comparison of θ* with itself is θ*'s numbers
    sobol_params = tmp_path / "scan" / "sobol" / "params.json"
    summary = validate(config, chunks, sobol_params, tmp_path / "validate", plots=False,
                       compare={"scan_sobol": sobol_params, "scan_tpe": tmp_path / "scan" / "tpe" / "params.json"})
    same = summary["comparisons"]["scan_sobol"]
    assert same["Z_hard"] == summary["optimised"]["Z_hard"] and same["method"] == "scan:sobol"
    assert same["evaluations"] == 12
    assert same["improvement"] == pytest.approx(summary["improvement"])
    assert set(summary["bootstrap"]["analyses"]) == {"baseline", "optimised", "scan_sobol", "scan_tpe"}
    against = summary["bootstrap"]["against_optimised"]["scan_sobol"]  # θ* against itself, replica by replica
    assert against["ratio_to_optimised"] == 1.0 and against["ratio_interval_68"] == [1.0, 1.0]
    assert (tmp_path / "validate" / "workspace_scan_tpe.json").is_file()
    assert "Black-box comparison" in (tmp_path / "validate" / "report.html").read_text()


def test_scan_cli_refuses_a_params_file_that_is_not_an_optimisers_in_one_line(tmp_path, capsys):
    from zprime_grad.cli import main

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"parameters": []}))
    rc = main(["scan", "--columns", str(tmp_path), "--params", str(params), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not an optimiser params.json" in err and len(err.splitlines()) == 1
