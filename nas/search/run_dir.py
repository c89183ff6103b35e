"""What a run directory holds: the names of its files and the small readers and writers of them.

A search run directory (``nas search --out RUN_DIR``) holds

* ``config.yaml``: the search config it was started with (`write_config`, `saved_config`);
* ``trials.parquet``: one row per candidate (`nas.search.store`), the run's ground truth;
* ``search_state.json``: the search's state for resuming (`nas.search.search`);
* ``optuna.journal``: the Optuna study of a TPE or NSGA-II search without ``storage.optuna``;
* ``ray/``: what Ray Tune writes (never read back), unless ``storage.ray_path`` says elsewhere;
* ``ladder.json``: with a fidelity ladder, each rung's rank agreement with the next (`nas.search.ladder`),
  written as the search ends (readers recompute it from the table);

and after ``nas promote``

* ``promoted.parquet``: one row per promoted candidate, proxy and promoted-fidelity metrics side by side
  (the promoted ones are the mean over the seeds; its ``fidelity`` column names the fidelity);
* ``promoted_seeds.parquet``: one row per (model, fidelity, seed) trained, candidates and baselines;
* ``promoted/<hash>/``: ``spec.json``, ``model.pt`` and ``metrics.json`` of each promoted model (its first
  seed at the latest fidelity promoted at), and ``seeds/<fidelity>-seed<seed>/`` with those of every seed;
* ``promoted/summary.json``: the rank correlations between proxy and promoted mIoU, and ``comparison``:
  each candidate against each baseline over the seeds (`nas.search.promote`);

and after ``nas report``, ``report/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from nas.common.atomic import atomic_path
from nas.common.config import ConfigError, read_mapping, to_dict
from nas.common.errors import UserError, one_line
from nas.common.jsonutil import write_json

from .config import SearchConfig, search_config_from_dict

CONFIG_NAME = "config.yaml"
TABLE_NAME = "trials.parquet"
STATE_NAME = "search_state.json"
JOURNAL_NAME = "optuna.journal"
RAY_DIR = "ray"
PROMOTED_TABLE = "promoted.parquet"
PROMOTED_SEEDS_TABLE = "promoted_seeds.parquet"
PROMOTED_DIR = "promoted"
SUMMARY_NAME = "summary.json"  # in PROMOTED_DIR
PROMOTED_SPEC = "spec.json"  # in PROMOTED_DIR/<hash>, beside the weights (`nas.search.trainable.MODEL_NAME`)
PROMOTED_METRICS = "metrics.json"  # in PROMOTED_DIR/<hash>
PROMOTED_SEEDS_DIR = "seeds"  # in PROMOTED_DIR/<hash>: one folder per fidelity and seed trained
REPORT_DIR = "report"
LADDER_NAME = "ladder.json"  # a search with a fidelity ladder: each rung's rank agreement with the next
FIDELITY_CONFIG_NAME = "fidelity.yaml"  # a fidelity measurement's directory (`nas.search.fidelity`)
FIDELITY_SUMMARY_NAME = "summary.json"  # beside it, with its trials.parquet
SEARCH_FILES = (CONFIG_NAME, TABLE_NAME, STATE_NAME)  # any of them: the directory holds a search


class RunDirError(UserError):
    """A run directory file that is missing where it is needed, or damaged; one line naming it."""


def holds_search(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in SEARCH_FILES)


# ---------------------------------------------------------------------------------- config.yaml
def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The mapping in ``RUN_DIR/config.yaml`` as written (None without the file, {} for an empty one); not
    checked against `SearchConfig`. `RunDirError` for a file that is not a YAML mapping."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    return read_mapping(path, RunDirError, "damaged run config", empty={})


def saved_config(run_dir: Path) -> SearchConfig:
    """The config a run was started with (``RUN_DIR/config.yaml``), checked."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise RunDirError(f"{run_dir}: nothing to resume (no {CONFIG_NAME}); start it with --config")
    data = read_mapping(path, RunDirError, "damaged run config")
    try:
        return search_config_from_dict(data)
    except ConfigError as exc:
        raise RunDirError(f"{path}: damaged run config ({one_line(str(exc))})") from None


def write_config(config: SearchConfig, run_dir: Path) -> None:
    with atomic_path(Path(run_dir) / CONFIG_NAME) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


# ---------------------------------------------------------------------------------- storage elsewhere
def optuna_storage(config: SearchConfig, run_dir: Path) -> str:
    """Where the Optuna study lives: ``storage.optuna``, else the run's journal file."""
    return config.storage.optuna or str(Path(run_dir) / JOURNAL_NAME)


def ray_storage(config: SearchConfig, run_dir: Path) -> str:
    """Where Ray Tune writes its experiments: ``storage.ray_path``, else ``RUN_DIR/ray``."""
    return config.storage.ray_path or str(Path(run_dir) / RAY_DIR)


# ---------------------------------------------------------------------------------- promoted models
def promoted_dir(run_dir: Path, spec_hash: str | None = None) -> Path:
    """``RUN_DIR/promoted``, or the folder of the promoted model ``spec_hash`` in it."""
    folder = Path(run_dir) / PROMOTED_DIR
    return folder if spec_hash is None else folder / spec_hash


def promoted_seed_dir(run_dir: Path, spec_hash: str, fidelity: str, seed: int) -> Path:
    """The folder of one (model, fidelity, seed) promotion: its ``metrics.json``, ``spec.json`` and ``model.pt``."""
    return promoted_dir(run_dir, spec_hash) / PROMOTED_SEEDS_DIR / f"{fidelity}-seed{seed}"


def write_promoted(
    run_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any], seed_rows: list[dict[str, Any]] = ()
) -> None:
    """``promoted.parquet`` (one row per promoted candidate), ``promoted_seeds.parquet`` (one row per
    model and seed) and ``promoted/summary.json``."""
    with atomic_path(Path(run_dir) / PROMOTED_TABLE) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    if seed_rows:
        with atomic_path(Path(run_dir) / PROMOTED_SEEDS_TABLE) as tmp:
            pq.write_table(pa.Table.from_pylist(list(seed_rows)), tmp)
    write_json(promoted_dir(run_dir) / SUMMARY_NAME, summary)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object at ``path`` ({} without the file); `RunDirError` when it is not one."""
    if not path.exists():
        return {}
    return read_mapping(path, RunDirError, "damaged JSON")
