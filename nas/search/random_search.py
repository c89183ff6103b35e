"""Random search: independent samples of the search space (SpineNet's sampler)."""

from __future__ import annotations

import random
from typing import Any

from search_spaces import sample

from .base import Candidate, Controller, Values, rng_state, set_rng_state


class RandomSearch(Controller):
    name = "random"

    def __init__(self, space, seed: int, directions=("maximize",)):
        super().__init__(space, seed, directions)
        self.rng = random.Random(seed)

    def ask(self, candidate_id: int) -> Candidate:
        spec = sample(self.space, self.rng.getrandbits(63), name=f"random-{candidate_id}")
        return Candidate(candidate_id, spec, origin="random")

    def tell(self, candidate: Candidate, values: Values | None) -> None:
        pass  # nothing to learn

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])
