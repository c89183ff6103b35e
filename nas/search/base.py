"""The strategy interface: ask for a candidate, tell its result. Nothing about how trials run.

A `Controller` proposes `Candidate`s (a spec plus where it came from) and learns from the
objective values it is told. Its whole state is plain data (`state_dict`), saved by the search
after every ask and tell, so a killed search resumes with the same population or study.
Randomness comes only from the controller's own seeded generator: the same seed and the same
sequence of asks and tells give the same candidates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from search_spaces import ArchSpec, SearchSpace

Values = tuple[float, ...]  # objective values, in the Objective's directions


@dataclass(frozen=True)
class Candidate:
    id: int  # ask order within the search, from 0
    spec: ArchSpec
    origin: str  # baseline | seed | random | mutation | tpe | nsga2
    parents: tuple[str, ...] = ()  # spec hashes of the parents
    mutation: dict[str, Any] | None = None  # Mutation.to_dict() that made it from its parent
    extra: dict[str, Any] = field(default_factory=dict)  # strategy bookkeeping (e.g. Optuna trial number)
    rung: int = 0  # where it stands on the search's fidelity ladder (0: the cheapest fidelity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec.to_json(indent=None),
            "origin": self.origin,
            "parents": list(self.parents),
            "mutation": self.mutation,
            "extra": self.extra,
            "rung": self.rung,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            id=int(data["id"]),
            spec=ArchSpec.from_json(data["spec"]),
            origin=data["origin"],
            parents=tuple(data["parents"]),
            mutation=data["mutation"],
            extra=dict(data.get("extra") or {}),
            rung=int(data.get("rung", 0)),
        )


class Controller(ABC):
    """Ask/tell over specs. ``values`` is None for a candidate that failed."""

    name: str = ""

    def __init__(self, space: SearchSpace, seed: int, directions: tuple[str, ...] = ("maximize",)):
        self.space = space
        self.seed = seed
        self.directions = directions

    @abstractmethod
    def ask(self, candidate_id: int) -> Candidate: ...

    @abstractmethod
    def tell(self, candidate: Candidate, values: Values | None) -> None: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def seed_specs(self) -> tuple[ArchSpec, ...]:
        """Specs this strategy trains itself at the start (the search then skips them as baselines)."""
        return ()

    def recover(self, pending: list[Candidate]) -> None:  # noqa: B027 (optional hook)
        """After a resume: ``pending`` are the candidates that will run again; clean up the rest."""


def rng_state(rng) -> list:
    """`random.Random` state as JSON-ready lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng, state: list) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))
