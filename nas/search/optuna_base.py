"""Optuna samplers as controllers: the study lives in an Optuna storage, not in the controller.

Storage: an RDB URL (``postgresql://...`` on a cluster, ``sqlite:///...``), or a file path for
Optuna's journal-file storage, the default (``RUN_DIR/optuna.journal``). The journal is the default
rather than SQLite because every trial here sets 5 parameters per block (80 for 16 blocks) and
SQLite commits each one: measured on a 2-core VM, 20 TPE trials took 6.4 s of storage time with
SQLite against 1.4 s with the journal (1.1 s in memory).

The controller asks the study for a trial over the fixed distributions of `encoding`, decodes it
into a spec and tells the study the objective values (or FAIL). Study trials left RUNNING by a
killed driver that no pending candidate owns are marked FAIL on resume.

Its own state is plain JSON numbers: the random state of every numpy generator the sampler draws
from (`RNG_PATHS`), which Optuna does not keep in the storage. A resumed controller re-creates the
sampler from its seed and restores those states, so it proposes exactly what the uninterrupted one
would. Nothing else in the sampler changes its proposals: TPE's gamma and the intersection search
space are caches recomputed from the study, and NSGA-II keeps its generations and parent
populations in the storage. A run directory is never unpickled (loading a pickle runs code): a
state written by older versions, which pickled the sampler, is refused.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from search_spaces import SearchSpace

from .base import Candidate, Controller, Values
from .encoding import decode, distributions


class OptunaController(Controller):
    name = "optuna"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        directions: tuple[str, ...] = ("maximize",),
        storage: str | Path | None = None,
        study_name: str = "search",
    ):
        super().__init__(space, seed, directions)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = storage
        self.study_name = study_name
        self.sampler = self.make_sampler(seed)
        random_states(self.sampler)  # fails here, not at the first save, when Optuna moved a generator
        self.study = optuna.create_study(
            storage=open_storage(storage),
            sampler=self.sampler,
            study_name=study_name,
            directions=list(directions),
            load_if_exists=True,
        )
        self.distributions = distributions(space)

    @abstractmethod
    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    def ask(self, candidate_id: int) -> Candidate:
        trial = self.study.ask(self.distributions)
        spec = decode(self.space, trial.params, name=f"{self.name}-{candidate_id}")
        return Candidate(candidate_id, spec, origin=self.name, extra={"optuna_trial": trial.number})

    def tell(self, candidate: Candidate, values: Values | None) -> None:
        number = candidate.extra["optuna_trial"]
        # skip_if_finished: a tell replayed on resume may already be in the storage.
        if values is None:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            self.study.tell(number, list(values) if len(values) > 1 else values[0], skip_if_finished=True)

    def state_dict(self) -> dict[str, Any]:
        return {"random_states": {path: _rng_to_json(rng) for path, rng in random_states(self.sampler).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sampler's random states; ValueError (one line) for anything but the saved form."""
        if isinstance(state, dict) and "sampler" in state:
            raise ValueError(
                "written by an older version of nas, which saved the Optuna sampler as a pickle; a pickle from a "
                "run directory is never loaded, so this run cannot be resumed safely (start a new run)"
            )
        if not isinstance(state, dict) or set(state) != {"random_states"}:
            raise ValueError("controller state: expected an object with only 'random_states'")
        saved = state["random_states"]
        if not isinstance(saved, dict) or set(saved) != set(RNG_PATHS):
            raise ValueError(f"controller state: random_states must name exactly {', '.join(RNG_PATHS)}")
        restored = {path: _rng_from_json(path, saved[path]) for path in RNG_PATHS}  # all checked before any is set
        for path, rng in random_states(self.sampler).items():
            rng.set_state(restored[path])

    def recover(self, pending: list[Candidate]) -> None:
        """Mark RUNNING study trials that no pending candidate owns as FAIL (a driver killed between
        asking the study and saving its state leaves one)."""
        owned = {c.extra.get("optuna_trial") for c in pending}
        orphans = [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        orphans = [n for n in orphans if n not in owned]
        for number in orphans:
            self.study.tell(number, state=TrialState.FAIL)


def open_storage(storage: str | Path | None):
    """An Optuna storage from an RDB URL or a journal file path (None: in memory)."""
    if storage is None or (isinstance(storage, str) and "://" in storage):
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


# Where Optuna 5's TPESampler and NSGAIISampler keep the numpy RandomStates they draw from (each
# wrapped in a LazyRandomState), as attribute paths from the sampler: `_rng` (TPE: the Parzen
# estimators' samples; NSGA-II: crossover and mutation, through its child generation strategy,
# which holds this same object) and `_random_sampler._rng` (startup and independent samples).
# tests/test_run_dir_safety.py walks the installed samplers to check that the list is complete.
RNG_PATHS = ("_rng", "_random_sampler._rng")
MT19937_KEY_WORDS = 624
RNG_FIELDS = ("key", "pos", "has_gauss", "cached_gaussian")


def random_states(sampler: optuna.samplers.BaseSampler) -> dict[str, np.random.RandomState]:
    """The sampler's numpy RandomStates by `RNG_PATHS` entry."""
    found = {}
    for path in RNG_PATHS:
        holder: Any = sampler
        for name in path.split("."):
            holder = getattr(holder, name, None)
        rng = getattr(holder, "rng", None)  # LazyRandomState.rng creates the generator on first use
        if not isinstance(rng, np.random.RandomState):
            raise RuntimeError(
                f"optuna {optuna.__version__}: {type(sampler).__name__} has no random state at {path}; "
                "nas.search.optuna_base.RNG_PATHS needs updating for this Optuna version"
            )
        found[path] = rng
    return found


def _rng_to_json(rng: np.random.RandomState) -> dict[str, Any]:
    _, key, pos, has_gauss, cached_gaussian = rng.get_state(legacy=True)
    fields = (key.tolist(), int(pos), int(has_gauss), float(cached_gaussian))
    return dict(zip(RNG_FIELDS, fields))


def _rng_from_json(path: str, data: Any) -> tuple:
    """`RandomState.set_state`'s tuple from `_rng_to_json`'s form, every field checked."""
    where = f"controller state: random state {path}"
    if not isinstance(data, dict) or set(data) != set(RNG_FIELDS):
        raise ValueError(f"{where}: expected exactly the fields {', '.join(RNG_FIELDS)}")
    key, pos, has_gauss, cached_gaussian = (data[f] for f in RNG_FIELDS)
    if not (isinstance(key, list) and len(key) == MT19937_KEY_WORDS and all(_is_uint32(k) for k in key)):
        raise ValueError(f"{where}: key must be {MT19937_KEY_WORDS} integers in [0, 2**32)")
    if not (_is_int(pos) and 0 <= pos <= MT19937_KEY_WORDS):
        raise ValueError(f"{where}: pos must be an integer in [0, {MT19937_KEY_WORDS}], got {pos!r}")
    if has_gauss not in (0, 1) or not _is_int(has_gauss):
        raise ValueError(f"{where}: has_gauss must be 0 or 1, got {has_gauss!r}")
    if not (isinstance(cached_gaussian, (int, float)) and not isinstance(cached_gaussian, bool)):
        raise ValueError(f"{where}: cached_gaussian must be a number, got {cached_gaussian!r}")
    if not math.isfinite(cached_gaussian):
        raise ValueError(f"{where}: cached_gaussian must be finite, got {cached_gaussian!r}")
    return ("MT19937", np.array(key, dtype=np.uint32), pos, has_gauss, float(cached_gaussian))


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not a float such as 3.0


def _is_uint32(value: Any) -> bool:
    return _is_int(value) and 0 <= value < 2**32
