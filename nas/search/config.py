"""The search config: a YAML file mapping onto `SearchConfig` (unknown keys are errors naming the key).

Relative paths inside it (a task file, seed spec files) are relative to the config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from nas.common.config import MAX_SEED, ConfigError, from_dict, load_file, to_dict
from search_spaces import SearchSpace, SpaceOptions, SpecError

from .objective import Objective

StrategyName = Literal["random", "evolution", "tpe", "nsga2"]  # the one list: `nas.search.STRATEGIES` and the CLI
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)

MAX_NAME = 100
MAX_BLOCKS = 64
MAX_RETRIES = 100
MAX_CONCURRENT = 1024
RAY_RESOURCE_UNIT = 0.0001  # the smallest nonzero resource request Ray accepts


@dataclass(frozen=True)
class StrategyConfig:
    name: StrategyName = "evolution"
    population: int = 16  # evolution: population size; nsga2: generation size
    sample_size: int = 4  # evolution: tournament size
    init: Literal["random", "mutants"] = "random"  # evolution: how the initial population is filled
    seeds: tuple[str, ...] = ()  # evolution: more specs for the initial population (after the baselines)

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ConfigError(f"population: must be >= 2, got {self.population}")
        if not 2 <= self.sample_size <= self.population:
            raise ConfigError(f"sample_size: must be in [2, population={self.population}], got {self.sample_size}")
        _names("seeds", self.seeds)


@dataclass(frozen=True)
class SpaceConfig(SpaceOptions):
    """The ``space:`` key: the search space's flat options, with the search's limit on blocks."""

    def __post_init__(self) -> None:
        # Every candidate is a network of this many blocks, trained at a proxy budget: SpineNet's
        # spaces have 16; far more would only make each trial slower than any budget allows.
        if self.num_blocks > MAX_BLOCKS:
            raise ConfigError(f"num_blocks: must be <= {MAX_BLOCKS}, got {self.num_blocks}")
        super().__post_init__()  # its SpecError reads "space: search space: ..." once from_dict adds the key

    def build(self) -> SearchSpace:
        try:
            return super().build()
        except SpecError as exc:
            raise ConfigError(f"space: {exc}") from None


@dataclass(frozen=True)
class BudgetConfig:
    trials: int = 16  # candidates trained, baselines included (duplicates are free)
    time_limit_s: float | None = None  # no new trial starts after this long (per session)
    max_duplicates: int = 100  # give up after this many duplicates in a row (a space exhausted)

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"trials: must be >= 1, got {self.trials}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s: must be > 0 or null (no limit), got {self.time_limit_s}")
        if self.max_duplicates < 1:
            raise ConfigError(f"max_duplicates: must be >= 1, got {self.max_duplicates}")


@dataclass(frozen=True)
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional packs small proxy trials onto one GPU (0.25: four per GPU)
    max_concurrent: int = 2
    ray_cpus: int | None = None  # CPUs of the embedded local Ray (default: all); ignored with --address
    ray_gpus: int | None = None

    def __post_init__(self) -> None:
        # Ray refuses a nonzero request below its resource unit, and only when a trial is started.
        if self.cpus_per_trial < RAY_RESOURCE_UNIT:
            raise ConfigError(f"cpus_per_trial: must be >= {RAY_RESOURCE_UNIT}, got {self.cpus_per_trial}")
        if self.gpus_per_trial != 0 and self.gpus_per_trial < RAY_RESOURCE_UNIT:
            raise ConfigError(f"gpus_per_trial: must be 0 or >= {RAY_RESOURCE_UNIT}, got {self.gpus_per_trial}")
        # Tune asks the searcher for up to max_concurrent candidates ahead of the resources to run them.
        if not 1 <= self.max_concurrent <= MAX_CONCURRENT:
            raise ConfigError(f"max_concurrent: must be in [1, {MAX_CONCURRENT}], got {self.max_concurrent}")
        if self.ray_cpus is not None and self.ray_cpus < 1:
            raise ConfigError(f"ray_cpus: must be >= 1 or null (all of this machine's), got {self.ray_cpus}")
        if self.ray_gpus is not None and self.ray_gpus < 0:
            raise ConfigError(f"ray_gpus: must be >= 0 or null (all of this machine's), got {self.ray_gpus}")


@dataclass(frozen=True)
class SchedulerConfig:
    asha: bool = False  # stop bad candidates early on their intermediate mIoU (needs fidelity eval_every)
    grace_steps: int = 100  # ASHA: no candidate is stopped before this many steps
    reduction_factor: float = 3.0

    def __post_init__(self) -> None:
        if self.grace_steps < 1:
            raise ConfigError(f"grace_steps: must be >= 1, got {self.grace_steps}")
        if self.reduction_factor <= 1:
            raise ConfigError(f"reduction_factor: must be > 1, got {self.reduction_factor}")


# The table's numeric columns a rung can rank by (`nas.search.store.SCHEMA`).
RANKABLE_COLUMNS = (
    "objective",
    "miou",
    "pixel_accuracy",
    "val_loss",
    "loss_final",
    "score",
    "flops",
    "params",
    "latency_ms",
)


@dataclass(frozen=True)
class RungConfig:
    """A cheap rung of the fidelity ladder: every candidate is evaluated at the cheapest rung, and the
    best ``keep`` share of each rung goes up to the next (successive halving across fidelities)."""

    fidelity: str
    keep: float = 0.25
    # what ranks candidates at this rung: auto (a training-free fidelity's zero-cost score, else the
    # objective), or a column of the results table ("-val_loss": the lower the better)
    metric: str = "auto"

    def __post_init__(self) -> None:
        if not self.fidelity.strip():
            raise ConfigError("fidelity: must name a fidelity of the task")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep: must be in (0, 1], got {self.keep}")
        if self.metric != "auto" and self.metric.lstrip("-") not in RANKABLE_COLUMNS:
            raise ConfigError(
                f"metric: must be auto or one of {', '.join(RANKABLE_COLUMNS)} (with - for lower is better), "
                f"got {self.metric!r}"
            )


@dataclass(frozen=True)
class StorageConfig:
    ray_path: str | None = None  # Ray Tune storage (shared filesystem or cloud URI); default RUN_DIR/ray
    optuna: str | None = None  # Optuna RDB URL (postgresql://..., sqlite:///...); default RUN_DIR/optuna.journal


DEFAULT_BASELINES = ("deeplabv3-resnet50",)  # a search's reference points, and a promotion's when its run names none


@dataclass(frozen=True)
class SearchConfig:
    name: str = "search"
    task: str = "synthetic"  # a built-in task or a task file
    fidelity: str = "proxy"  # the fidelity candidates are ranked at (the ladder's top rung)
    # cheaper rungs before ``fidelity``, cheapest first (`RungConfig`); empty: every candidate at ``fidelity``
    ladder: tuple[RungConfig, ...] = ()
    data_root: str | None = None
    seed: int = 0
    baselines: tuple[str, ...] = DEFAULT_BASELINES  # trained first, as reference points
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    objective: Objective = field(default_factory=Objective)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    retries: int = 2  # times Ray Tune restarts a trial whose worker or node died

    def __post_init__(self) -> None:
        # The name is the Optuna study's: an empty one would make Optuna invent a new name at every
        # start, so a resumed search would lose its study.
        if not (0 < len(self.name) <= MAX_NAME and self.name.isprintable() and self.name == self.name.strip()):
            raise ConfigError(
                f"name: must be 1 to {MAX_NAME} printable characters without leading or trailing spaces, "
                f"got {_quoted(self.name)}"
            )
        for key in ("task", "fidelity"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key}: must not be empty")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's generators (Optuna's samplers) take 32-bit seeds
            raise ConfigError(f"seed: must be in [0, {MAX_SEED}], got {self.seed}")
        _names("baselines", self.baselines)
        rungs = [r.fidelity for r in self.ladder] + [self.fidelity]
        if len(set(rungs)) != len(rungs):
            raise ConfigError(f"ladder: each rung needs a fidelity of its own, got {rungs}")
        if self.ladder and self.scheduler.asha:
            raise ConfigError("scheduler.asha: not with a ladder (the ladder already stops the weaker candidates)")
        if not 0 <= self.retries <= MAX_RETRIES:  # Tune reads a negative max_failures as "retry forever"
            raise ConfigError(f"retries: must be in [0, {MAX_RETRIES}], got {self.retries}")

    @property
    def rungs(self) -> tuple[str, ...]:
        """The fidelity of each rung, cheapest first; the last is ``fidelity``."""
        return (*(r.fidelity for r in self.ladder), self.fidelity)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _names(key: str, names: tuple[str, ...]) -> None:
    for i, name in enumerate(names):
        if not name.strip():
            raise ConfigError(f"{key}[{i}]: must name a spec (a published name or a spec file), got {_quoted(name)}")


def _quoted(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37]) + f"... ({len(text)} characters)"


def load_search_config(path: str | Path) -> SearchConfig:
    path = Path(path)
    data = load_file(path)
    try:
        config = from_dict(SearchConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _resolve_paths(config, path.parent)


def search_config_from_dict(data: dict[str, Any]) -> SearchConfig:
    return from_dict(SearchConfig, data)


def resolve_ref(ref: str, base: Path) -> str:
    """A config's reference to a file (a path, or a .json/.yaml name) made absolute against the config's
    folder ``base``; a published or built-in name as it is."""
    return str((base / ref).resolve()) if ("/" in ref or ref.endswith((".json", ".yaml", ".yml"))) else ref


def _resolve_paths(config: SearchConfig, base: Path) -> SearchConfig:
    def resolve(ref: str) -> str:
        return resolve_ref(ref, base)

    strategy = replace(config.strategy, seeds=tuple(resolve(s) for s in config.strategy.seeds))
    return replace(
        config,
        task=resolve(config.task),
        baselines=tuple(resolve(b) for b in config.baselines),
        strategy=strategy,
    )
