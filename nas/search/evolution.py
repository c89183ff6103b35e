"""Regularized (aging) evolution (Real et al., 2019), started from the networks the search improves.

The population holds the last ``population`` evaluated candidates. A new candidate is a mutation
(`search_spaces.mutate`) of the best of ``sample_size`` members drawn at random; the oldest
member dies when a child joins, whatever its score, which favours architectures that stay good
under retraining rather than one lucky evaluation.

The initial population is the seed specs (by default DeepLabv3, as SpineNet-Seg searches from
it; published SpineNets may be added) followed by random samples (``init: random``) or by
mutants of the seeds (``init: mutants``), until ``population`` candidates have been asked.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from search_spaces import ArchSpec, SearchSpace, SpecError, mutate, sample

from .base import Candidate, Controller, Values, rng_state, set_rng_state


class RegularizedEvolution(Controller):
    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        directions: tuple[str, ...] = ("maximize",),
        population: int = 16,
        sample_size: int = 4,
        seeds: tuple[ArchSpec, ...] = (),
        init: str = "random",
    ):
        super().__init__(space, seed, directions)
        if not 2 <= sample_size <= population:
            raise ValueError(f"sample_size must be in [2, population={population}], got {sample_size}")
        if init not in ("random", "mutants"):
            raise ValueError(f"init must be random or mutants, got {init!r}")
        if init == "mutants" and not seeds:
            raise ValueError("init: mutants needs at least one seed spec")
        for spec in seeds:
            try:
                space.validate(spec)
            except SpecError as exc:
                raise SpecError(f"seed {spec.name or spec.hash} is outside the search space: {exc}") from None
        self.population_size = population
        self.sample_size = sample_size
        self.seeds = tuple(seeds)
        self.init = init
        self.rng = random.Random(seed)
        self.initial_asked = 0
        self.population: list[tuple[ArchSpec, float]] = []  # oldest first

    @property
    def seed_specs(self) -> tuple[ArchSpec, ...]:
        return self.seeds

    def ask(self, candidate_id: int) -> Candidate:
        if self.initial_asked < self.population_size:
            k = self.initial_asked
            self.initial_asked += 1
            if k < len(self.seeds):
                return Candidate(candidate_id, self.seeds[k], origin="seed")
            if self.init == "mutants":
                parent = self.seeds[k % len(self.seeds)]
                return self._child(candidate_id, parent)
            spec = sample(self.space, self.rng.getrandbits(63), name=f"random-{candidate_id}")
            return Candidate(candidate_id, spec, origin="random")
        if not self.population:  # every initial candidate failed or is still running
            spec = sample(self.space, self.rng.getrandbits(63), name=f"random-{candidate_id}")
            return Candidate(candidate_id, spec, origin="random")
        contenders = self.rng.sample(range(len(self.population)), min(self.sample_size, len(self.population)))
        best = max(contenders, key=lambda i: self.population[i][1])
        return self._child(candidate_id, self.population[best][0])

    def _child(self, candidate_id: int, parent: ArchSpec) -> Candidate:
        child, mutation = mutate(parent, self.space, self.rng)
        child = replace(child, name=f"evo-{candidate_id}")
        return Candidate(candidate_id, child, origin="mutation", parents=(parent.hash,), mutation=mutation.to_dict())

    def tell(self, candidate: Candidate, values: Values | None) -> None:
        if values is None:
            return  # a failed candidate never joins the population
        score = values[0] if self.directions[0] == "maximize" else -values[0]
        self.population.append((candidate.spec, score))
        if len(self.population) > self.population_size:
            self.population.pop(0)  # aging: the oldest dies

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": rng_state(self.rng),
            "initial_asked": self.initial_asked,
            "population": [[spec.to_json(indent=None), score] for spec, score in self.population],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])
        self.initial_asked = int(state["initial_asked"])
        self.population = [(ArchSpec.from_json(text), float(score)) for text, score in state["population"]]
