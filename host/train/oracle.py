"""The search's oracle: KerasTuner's Bayesian optimisation, its random start handed out longest trial first.

A search begins with INITIAL_POINTS random trials (host.train.tune) before the Gaussian process
guides it. KerasTuner draws each when a worker asks, so with several workers the order of the
draws is the order of the runs, and a long trial drawn late runs alone at the end while the other
workers wait with nothing to do (measured: ZRec50, 16 trials of 2 epochs on 2 workers, the last
trial, 4 layers of 64 units, ran alone for its last 9 of 58 s; docs/tuning.md, "Throughput").
Here the random start is drawn at once, with KerasTuner's own draws (same seed, same values, no
duplicates), and handed out longest first: the classic longest-processing-time-first order, which
ends a batch of jobs on several machines within about one short job of each other. The set of
trials is unchanged, and each trial trains the same whenever it runs (its weights and dropout are
seeded from the search's seed and its own values: host.train.fit.trial_seed), so with a budget
within the random start a search scores the same trials the same on any number of workers. The
seed is taken as given, 0 included (KerasTuner alone would draw a random one for 0, grasptpu's
default).
"""

from __future__ import annotations

import keras_tuner as kt
import numpy as np

# A trial's time grows with its layers and their units; each layer also costs about as much as
# 40 more units (ZRec50, 2-epoch trials on one core: 1 layer x 16 units 2 s, 2 x 32 4 s,
# 4 x 16 5 s, 4 x 32 6 s, 4 x 40 7 s, 4 x 64 9-10 s). Only the order matters, so a rough model does.
UNITS_PER_LAYER_COST = 40


def trial_cost(values: dict) -> float:
    """A relative estimate of how long a trial with these hyperparameter values trains."""
    return float(values.get("bilstm_layers", 1)) * (float(values.get("units", 0)) + UNITS_PER_LAYER_COST)


class LongestFirstOracle(kt.oracles.BayesianOptimizationOracle):
    """BayesianOptimizationOracle whose random start runs longest trial first (see the module docstring)."""

    def __init__(self, *, seed: int, **kwargs):
        if not isinstance(seed, int):
            raise TypeError(f"the search needs an integer seed, not {seed!r}")
        super().__init__(seed=seed, **kwargs)
        # KerasTuner takes a seed of 0 for none and draws one at random (`seed or random.randint(...)`):
        # grasptpu's default seed, 0, would give another search each run. Seed as asked instead.
        self.seed = self._seed_state = seed
        self._random_state = np.random.RandomState(seed)
        self.gpr = self._make_gpr()
        # the random start not yet handed out, longest first. Not part of the saved state: grasptpu
        # never resumes a search (its tuners overwrite), and a worker's oracle is the chief's.
        self._planned: list | None = None

    def _random_values(self):
        if self._planned is None:
            self._planned = self._draw_random_start()
        if self._planned:
            return self._planned.pop(0)
        return super()._random_values()  # a failed trial's replacement, or a budget beyond the start

    def _draw_random_start(self) -> list:
        """KerasTuner's own random draws for the whole random start (or the whole budget, if smaller),
        each marked tried so none repeats, sorted longest first (ties in the order drawn)."""
        start = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)  # KerasTuner's rule
        draws = []
        for _ in range(min(self.max_trials or start, start) - len(self.trials)):
            values = super()._random_values()
            if values is None:  # the space is exhausted
                break
            self._tried_so_far.add(self._compute_values_hash(values))
            draws.append(values)
        return sorted(draws, key=trial_cost, reverse=True)
