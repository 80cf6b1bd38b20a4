"""The search's oracle (host.train.oracle): KerasTuner's random start, reproducible and longest trial first."""

from __future__ import annotations

import keras_tuner as kt
import pytest

from host.train.model import SEARCH_SPACE
from host.train.oracle import LongestFirstOracle, trial_cost
from host.train.tune import INITIAL_POINTS


def _space():
    hp = kt.HyperParameters()
    for name, values in SEARCH_SPACE.items():
        hp.Choice(name, values)
    return hp


def _hand_out(oracle_class, trials: int, seed: int, tmp_path) -> list[dict]:
    """The values of `trials` trials handed out one after the other, none finished (as to busy workers)."""
    oracle = oracle_class(objective=kt.Objective("val_accuracy", "max"), max_trials=trials, seed=seed,
                          num_initial_points=INITIAL_POINTS, hyperparameters=_space())
    oracle._set_project_dir(str(tmp_path / f"{oracle_class.__name__}-{seed}-{trials}"), "search")
    return [dict(oracle.create_trial(f"worker{k}").hyperparameters.values) for k in range(trials)]


def _as_set(trials: list[dict]) -> set:
    return {tuple(sorted(values.items())) for values in trials}


def test_seed_zero_gives_the_same_search_every_time(tmp_path):
    """KerasTuner alone draws a random seed for 0 (grasptpu's default): two of its searches differ."""
    assert _hand_out(LongestFirstOracle, 8, 0, tmp_path / "a") == _hand_out(LongestFirstOracle, 8, 0, tmp_path / "b")


@pytest.mark.parametrize("trials", [6, INITIAL_POINTS])
def test_the_random_start_is_keras_tuners_own_draws_longest_first(tmp_path, trials):
    ours = _hand_out(LongestFirstOracle, trials, 5, tmp_path)
    theirs = _hand_out(kt.oracles.BayesianOptimizationOracle, trials, 5, tmp_path)
    assert _as_set(ours) == _as_set(theirs) and len(_as_set(ours)) == trials
    costs = [trial_cost(values) for values in ours]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert [trial_cost(values) for values in theirs] != costs  # KerasTuner's order is the order drawn


def test_a_budget_beyond_the_random_start_draws_more_without_repeating(tmp_path):
    trials = _hand_out(LongestFirstOracle, INITIAL_POINTS + 3, 0, tmp_path)  # none finished: still random
    assert len(_as_set(trials)) == INITIAL_POINTS + 3
    costs = [trial_cost(values) for values in trials[:INITIAL_POINTS]]
    assert costs == sorted(costs, reverse=True)


def test_cost_grows_with_layers_and_units():
    assert trial_cost({"bilstm_layers": 4, "units": 64}) > trial_cost({"bilstm_layers": 4, "units": 16}) \
        > trial_cost({"bilstm_layers": 2, "units": 32}) > trial_cost({"bilstm_layers": 1, "units": 64})
