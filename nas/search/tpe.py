"""Optuna's TPE over the topology encoding (multivariate, so block choices are modelled jointly)."""

from __future__ import annotations

import optuna

from .optuna_base import OptunaController


class TPESearch(OptunaController):
    name = "tpe"

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        # Startup trials are random samples of the encoding; TPE models the rest.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
