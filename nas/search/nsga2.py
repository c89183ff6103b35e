"""Optuna's NSGA-II over the topology encoding: mIoU up, cost down (a Pareto search)."""

from __future__ import annotations

import optuna

from .optuna_base import OptunaController


class NSGA2Search(OptunaController):
    name = "nsga2"

    def __init__(self, *args, population: int = 16, **kwargs):
        self.population_size = population
        super().__init__(*args, **kwargs)

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)
