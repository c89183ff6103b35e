"""The analysis API on run directories built by hand (no Ray): numbers, plots, report, errors."""

from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from analysis import (
    RunError,
    load_run,
    plot_best_so_far,
    plot_lineage,
    plot_pareto,
    plot_per_class_iou,
    plot_proxy_vs_full,
    plot_topologies,
    write_report,
)
from analysis.report import ReportError
from analysis.topology import draw_topology
from nas.cli import make_parser
from nas.common.errors import UserError
from nas.search.store import write_rows
from search_spaces import SearchSpace, get_spec, mutate, sample

CLASSES = ["background", "disk", "ring", "square", "triangle", "cross", "bar"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
M = 1_000_000
# Measured by `nas search --config launch/configs/smoke.yaml`: the trainer's own FLOPs count of
# DeepLabv3-ResNet-50 at the synthetic task's smoke fidelity (width x 0.125, 64 x 64, 7 classes).
DEEPLAB_SMOKE_FLOPS = 25_762_816
SPINENET49_SMOKE_FLOPS = 11_150_336


# ---------------------------------------------------------------------------------- synthetic runs
def _specs():
    """The candidates of the synthetic evolution run: a lineage random-1 -> evo-4 -> evo-5 -> evo-7."""
    space = SearchSpace()
    r1, r2, r3 = (sample(space, seed) for seed in (1, 2, 3))
    evo4, m4 = mutate(r1, space, rng=4)
    evo5, m5 = mutate(evo4, space, rng=5)
    evo7, m7 = mutate(evo5, space, rng=7)
    return {
        "base": get_spec("deeplabv3-resnet50"),
        "r1": r1,
        "r2": r2,
        "r3": r3,
        "evo4": evo4,
        "evo5": evo5,
        "evo7": evo7,
    }, {"evo4": m4, "evo5": m5, "evo7": m7}


def _ious(miou: float) -> str:
    # Background high, the shapes spread around the mIoU: values the per-class plot must show.
    return json.dumps({c: round(min(1.0, miou * (1 + 0.25 * (k - 3))) if k else 0.9, 4) for k, c in enumerate(CLASSES)})


def _row(
    trial_id,
    spec,
    name,
    origin,
    miou,
    flops,
    latency,
    finished,
    *,
    strategy="evolution",
    status="ok",
    parent=None,
    mutation=None,
    duplicate_of=None,
) -> dict:
    return {
        "trial_id": trial_id,
        "spec_hash": spec.hash,
        "name": name,
        "spec_json": spec.to_json(),
        "strategy": strategy,
        "origin": origin,
        "parent_hashes": [parent.hash] if parent else [],
        "mutation": json.dumps(mutation.to_dict()) if mutation else None,
        "status": status,
        "error": "RuntimeError: diverged" if status == "failed" else None,
        "duplicate_of": duplicate_of,
        "objective": miou,
        "miou": miou,
        "pixel_accuracy": None if miou is None else 0.5 + miou / 2,
        "flops": flops,
        "params": None if flops is None else flops // 40,
        "latency_ms": latency,
        "train_seconds": 1.0,
        "per_class_iou": None if miou is None else _ious(miou),
        "history": "[]",
        "fidelity": "smoke",
        "seed": 0,
        "node": "test",
        "device": "cpu",
        "attempts": 1,
        "started_at": T0 + timedelta(seconds=finished) - timedelta(milliseconds=500),
        "finished_at": T0 + timedelta(seconds=finished),
    }


def evolution_rows() -> list[dict]:
    """Eight trials: a baseline, three random draws (one failed), a lineage of mutations, a duplicate.

    Finishing order 1, 0, 2, 3, 4, 5, 6, 7 (trial 1 finished before the baseline).
    """
    s, m = _specs()
    duplicate = _row(6, s["evo4"], "evo-6", "mutation", 0.45, 80 * M, 6.0, 6, parent=s["r1"], mutation=m["evo4"])
    duplicate.update(status="duplicate", duplicate_of=4)  # evo-4 asked again: not trained, metrics copied
    return [
        _row(0, s["base"], "deeplabv3-resnet50", "baseline", 0.30, 100 * M, 5.0, 1),
        _row(1, s["r1"], "random-1", "random", 0.40, 50 * M, 4.0, 0),
        _row(2, s["r2"], "random-2", "random", 0.20, 30 * M, 3.0, 2),
        _row(3, s["r3"], "random-3", "random", None, None, None, 3, status="failed"),
        _row(4, s["evo4"], "evo-4", "mutation", 0.45, 80 * M, 6.0, 4, parent=s["r1"], mutation=m["evo4"]),
        _row(5, s["evo5"], "evo-5", "mutation", 0.35, 60 * M, 2.0, 5, parent=s["evo4"], mutation=m["evo5"]),
        duplicate,
        _row(7, s["evo7"], "evo-7", "mutation", 0.50, 200 * M, 10.0, 7, parent=s["evo5"], mutation=m["evo7"]),
    ]


def random_rows() -> list[dict]:
    space = SearchSpace()
    values = [(0.10, 20), (0.35, 40), (0.25, 30)]
    return [
        _row(i, sample(space, 100 + i), f"random-{i}", "random", v, f * M, 1.0, i, strategy="random")
        for i, (v, f) in enumerate(values)
    ]


# proxy, full: Kendall tau = (5 concordant - 1 discordant) / 6 = 2/3; Spearman rho = 1 - 6 * 2 / (4 * 15) = 0.8
PROMOTED = {7: (0.50, 0.60), 4: (0.45, 0.62), 1: (0.40, 0.50), 5: (0.35, 0.30)}


def make_run(
    path: Path,
    rows: list[dict] | None = None,
    promoted: bool = True,
    weights: bool = False,
    strategy: str = "evolution",
) -> Path:
    """A run directory as `nas search` + `nas promote --fidelity smoke` leave it."""
    rows = evolution_rows() if rows is None else rows
    path.mkdir(parents=True)
    config = {
        "name": "smoke",
        "task": "synthetic",
        "fidelity": "smoke",
        "seed": 0,
        "baselines": ["deeplabv3-resnet50"],
        "strategy": {"name": strategy, "population": 4},
        "objective": {"kind": "miou", "cost": "flops"},
        "budget": {"trials": len(rows)},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_rows(path / "trials.parquet", rows)
    if promoted:
        _promote(path, {r["trial_id"]: r for r in rows}, weights)
    return path


def _promote(path: Path, by_id: dict[int, dict], weights: bool) -> None:
    records = []
    for trial_id, (proxy, full) in PROMOTED.items():
        row = by_id[trial_id]
        records.append(_promoted_record(path, row, proxy, full, weights))
    failed = by_id[0]  # promoted but its full training failed: no full mIoU, left out of tau and rho
    records.append({**_promoted_record(path, failed, failed["miou"], None, False), "status": "failed"})
    pq.write_table(pa.Table.from_pylist(records), path / "promoted.parquet")
    summary = {"fidelity": "smoke", "models": 4, "kendall_tau": 2 / 3, "spearman_rho": 0.8}
    (path / "promoted" / "summary.json").write_text(json.dumps(summary))


def _promoted_record(path: Path, row: dict, proxy: float, full: float | None, weights: bool) -> dict:
    folder = path / "promoted" / row["spec_hash"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(row["spec_json"])
    metrics = {
        "fidelity": "smoke",
        "seed": 1,
        "status": "ok" if full is not None else "failed",
        "full": {}
        if full is None
        else {"miou": full, "per_class_iou": json.loads(_ious(full)), "input_size": [64, 64], "num_classes": 7},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if weights and full is not None:
        _save_weights(folder / "model.pt", row["spec_json"])
    return {
        "spec_hash": row["spec_hash"],
        "name": row["name"],
        "trial_id": row["trial_id"],
        "status": "ok",
        "fidelity": "smoke",
        "proxy_miou": proxy,
        "proxy_objective": proxy,
        "promoted_miou": full,
        "promoted_pixel_accuracy": None,
        "flops": row["flops"],
        "params": row["params"],
        "promoted_train_seconds": 1.0,
        "path": f"promoted/{row['spec_hash']}",
    }


def _save_weights(path: Path, spec_json: str) -> None:
    # What promotion keeps: the model trained at the fidelity's width, with its (scaled) spec.
    from nas.model.builder import build_model
    from nas.model.checkpoint import save_model
    from proxy_tasks.task import load_task, scale_spec
    from search_spaces import ArchSpec

    spec = scale_spec(ArchSpec.from_json(spec_json), load_task("synthetic").fidelity("smoke"))
    save_model(path, build_model(spec, len(CLASSES)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Read-only for the tests that use it; a test that changes a run builds its own."""
    return make_run(tmp_path_factory.mktemp("runs") / "evo")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


def _one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


# ---------------------------------------------------------------------------------- tables
def test_load_run_tables(run, run_dir):
    assert run.path == run_dir
    assert list(run.trials["trial_id"]) == list(range(8))
    assert run.config["baselines"] == ["deeplabv3-resnet50"]
    assert run.summary["kendall_tau"] == pytest.approx(2 / 3)
    assert len(run.promoted) == 5 and run.fidelity == "smoke"
    assert "8 trials (ok 6, failed 1, pruned 0, duplicate 1), 5 promoted" in repr(run)


def test_a_promotion_table_of_the_earlier_column_names_reads_as_today(tmp_path, run):
    from analysis.run import EARLIER_PROMOTED_NAMES

    path = make_run(tmp_path / "old")
    table = pq.read_table(path / "promoted.parquet")
    old = {new: old for old, new in EARLIER_PROMOTED_NAMES.items()}
    pq.write_table(table.rename_columns([old.get(c, c) for c in table.column_names]), path / "promoted.parquet")
    assert "full_miou" in pq.read_schema(path / "promoted.parquet").names
    earlier = load_run(path)
    pd.testing.assert_frame_equal(earlier.promoted, run.promoted.assign(path=earlier.promoted["path"]))
    assert earlier.rank_correlation() == pytest.approx(run.rank_correlation())


def test_unpromoted_run_has_empty_promoted_table_with_columns(tmp_path):
    run = load_run(make_run(tmp_path / "r", promoted=False))
    assert run.promoted.empty
    assert {"spec_hash", "proxy_miou", "promoted_miou", "path"} <= set(run.promoted.columns)
    assert run.summary == {}
    assert run.rank_correlation()[2] == 0


def test_leaderboard_order(run):
    board = run.leaderboard()
    assert list(board["trial_id"]) == [7, 4, 1, 5, 0, 2, 3]  # duplicate 6 left out, failed 3 last
    assert list(run.leaderboard(top=3)["name"]) == ["evo-7", "evo-4", "random-1"]
    assert {"spec_json", "history"} <= set(run.leaderboard(all_columns=True).columns)


def test_pareto_front_membership(run):
    assert list(run.pareto("flops")["trial_id"]) == [2, 1, 4, 7]  # 0 and 5 are dominated by 1
    assert list(run.pareto("latency_ms")["trial_id"]) == [5, 1, 4, 7]  # 5 is the fastest here
    with pytest.raises(RunError) as excinfo:
        run.pareto("gpu_hours")
    _one_line_error(excinfo, "gpu_hours")


def test_best_so_far_in_finishing_order(run):
    best = run.best_so_far()
    assert list(best["trial_id"]) == [1, 0, 2, 3, 4, 5, 7]  # trial 1 finished first; duplicate 6 left out
    assert list(best["trial"]) == list(range(1, 8))
    assert list(best["best"]) == pytest.approx([0.40, 0.40, 0.40, 0.40, 0.45, 0.45, 0.50])
    assert set(best["strategy"]) == {"evolution"} and set(best["run"]) == {"evo"}


def test_lineage_chain(run):
    _, mutations = _specs()
    chain = run.lineage(7)
    assert list(chain["trial_id"]) == [1, 4, 5, 7]
    assert list(chain["step"]) == [0, 1, 2, 3]
    assert list(chain["origin"]) == ["random", "mutation", "mutation", "mutation"]
    assert pd.isna(chain["mutation"].iloc[0])  # the root was not made by a mutation
    assert list(chain["mutation"].iloc[1:]) == [mutations[k].kind for k in ("evo4", "evo5", "evo7")]
    assert list(chain["mutation_block"].iloc[1:]) == [mutations[k].block for k in ("evo4", "evo5", "evo7")]
    assert list(chain["objective"]) == pytest.approx([0.40, 0.45, 0.35, 0.50])
    # the same candidate by hash, hash prefix and name
    spec_hash = chain["spec_hash"].iloc[-1]
    for ref in (spec_hash, spec_hash[:8], "evo-7"):
        assert list(run.lineage(ref)["trial_id"]) == [1, 4, 5, 7]
    # a duplicate's hash names the trial that trained it; the duplicate itself has its own row
    assert run.row(run.row(6)["spec_hash"])["trial_id"] == 4
    assert list(run.lineage(6)["trial_id"]) == [1, 6]


def test_lineage_graph_and_missing_parent(tmp_path):
    rows = evolution_rows()
    orphan = {
        **rows[2],
        "trial_id": 8,
        "name": "orphan",
        "spec_hash": "0123456789abcdef",
        "parent_hashes": ["feedfacefeedface"],
        "origin": "mutation",
    }
    run = load_run(make_run(tmp_path / "r", [*rows, orphan], promoted=False))
    chain = run.lineage(8)
    assert list(chain["spec_hash"]) == ["feedfacefeedface", "0123456789abcdef"]
    assert chain["origin"].iloc[0] == "not in this run"
    graph = run.lineage_graph(7)
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3
    _, mutations = _specs()
    edge = graph.edges[run.row(5)["spec_hash"], run.row(7)["spec_hash"]]
    assert (edge["kind"], edge["block"]) == (mutations["evo7"].kind, mutations["evo7"].block)


def test_spec_and_row_lookup(run):
    specs, _ = _specs()
    assert run.spec(7) == specs["evo7"]
    assert run.spec("deeplabv3-resnet50").hash == get_spec("deeplabv3-resnet50").hash
    for bad in (99, "no-such-trial", 1.5):
        with pytest.raises(RunError) as excinfo:
            run.row(bad)
        _one_line_error(excinfo)


def test_rank_correlation_over_successful_promotions(run):
    tau, rho, n = run.rank_correlation()
    assert n == 4  # the failed promotion is left out
    assert tau == pytest.approx(2 / 3)
    assert rho == pytest.approx(0.8)


def test_references_trained_or_flops_only(run):
    refs = run.references("flops").set_index("name")
    assert list(refs.index) == ["deeplabv3-resnet50", "spinenet-49"]  # the baseline once, then SpineNet-49
    assert bool(refs.loc["deeplabv3-resnet50", "trained"]) and refs.loc["deeplabv3-resnet50", "cost"] == 100 * M
    assert refs.loc["deeplabv3-resnet50", "miou"] == pytest.approx(0.30)
    assert not refs.loc["spinenet-49", "trained"]
    assert refs.loc["spinenet-49", "cost"] == SPINENET49_SMOKE_FLOPS
    assert refs.loc["spinenet-49", "miou"] != refs.loc["spinenet-49", "miou"]  # NaN: no mIoU claimed
    latency = run.references("latency_ms").set_index("name")
    assert latency.loc["deeplabv3-resnet50", "cost"] == 5.0
    assert latency["cost"].isna().loc["spinenet-49"]  # never measured where the trials ran


def test_untrained_baseline_flops_match_the_trainers_count(tmp_path):
    rows = [r for r in evolution_rows() if r["trial_id"] != 0]
    run = load_run(make_run(tmp_path / "r", rows, promoted=False))
    assert run.input_size() == (64, 64)  # the synthetic task's smoke resolution
    refs = run.references("flops").set_index("name")
    assert not refs.loc["deeplabv3-resnet50", "trained"]
    assert refs.loc["deeplabv3-resnet50", "cost"] == DEEPLAB_SMOKE_FLOPS


def test_input_size_from_a_promotion_at_the_runs_fidelity(tmp_path):
    path = make_run(tmp_path / "r")
    for metrics in (path / "promoted").glob("*/metrics.json"):
        metrics.write_text(json.dumps({"fidelity": "smoke", "full": {"input_size": [48, 80]}}))
    assert load_run(path).input_size() == (48, 80)
    # a promotion at another fidelity says nothing about the search's input size
    for metrics in (path / "promoted").glob("*/metrics.json"):
        metrics.write_text(json.dumps({"fidelity": "full", "full": {"input_size": [128, 128]}}))
    assert load_run(path).input_size() == (64, 64)


# ---------------------------------------------------------------------------------- robustness
def test_moved_directory(tmp_path):
    original = make_run(tmp_path / "a", weights=True)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(original, moved)
    run = load_run(moved)
    top = run.promoted_pairs().iloc[0]
    assert run.promoted_dir(top["spec_hash"]) == moved / top["path"]
    assert run.promoted_metrics(top["spec_hash"])["full"]["miou"] == pytest.approx(0.60)
    assert len(plot_per_class_iou(run).axes) == 2  # the promoted metrics were found in the new place
    from nas.model.checkpoint import load_model

    model, _ = load_model(run.promoted_dir(top["spec_hash"]) / "model.pt")
    assert model.num_classes == 7


def test_still_running_reads_a_snapshot(tmp_path):
    rows = evolution_rows()
    path = make_run(tmp_path / "r", rows[:1], promoted=False)
    first = load_run(path)
    write_rows(path / "trials.parquet", rows[:3])  # the search goes on
    assert len(first.trials) == 1  # a loaded run does not change under the reader
    assert len(first.reload().trials) == 3

    stop = threading.Event()

    def search() -> None:  # rewrites the table as the search does, as fast as it can
        n = 1
        while not stop.is_set():
            write_rows(path / "trials.parquet", rows[: n % len(rows) + 1])
            n += 1

    writer = threading.Thread(target=search)
    writer.start()
    try:
        sizes = {len(load_run(path).trials) for _ in range(60)}
    finally:
        stop.set()
        writer.join()
    assert sizes <= set(range(1, len(rows) + 1))


def test_a_table_from_before_the_added_metrics_loads_with_them_missing(tmp_path):
    path = make_run(tmp_path / "r", promoted=False)
    table = pq.read_table(path / "trials.parquet")
    pq.write_table(table.drop_columns(["val_loss", "data_wait_fraction", "input_height"]), path / "trials.parquet")
    trials = load_run(path).trials
    assert len(trials) == table.num_rows and trials["val_loss"].isna().all() and trials["input_height"].isna().all()


def test_bad_input_errors(tmp_path):
    with pytest.raises(RunError) as excinfo:
        load_run(tmp_path / "nope")
    _one_line_error(excinfo, "nope", "no such run directory")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunError) as excinfo:
        load_run(empty)
    _one_line_error(excinfo, str(empty / "trials.parquet"))

    path = make_run(tmp_path / "r", promoted=False)
    table = path / "trials.parquet"
    valid = table.read_bytes()
    for damaged in (b"not parquet at all", valid[: len(valid) // 2]):
        table.write_bytes(damaged)
        with pytest.raises(RunError) as excinfo:
            load_run(path)
        _one_line_error(excinfo, str(table), "damaged")

    pq.write_table(pa.table({"trial_id": [0]}), table)
    with pytest.raises(RunError) as excinfo:
        load_run(path)
    _one_line_error(excinfo, str(table), "not a trials table")

    table.write_bytes(valid)
    (path / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(RunError) as excinfo:
        load_run(path)
    _one_line_error(excinfo, str(path / "config.yaml"))

    (path / "config.yaml").write_text("name: fine\n")
    (path / "promoted.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(RunError) as excinfo:
        load_run(path)
    _one_line_error(excinfo, str(path / "promoted.parquet"))


# ---------------------------------------------------------------------------------- plots
def _scatter(ax, label_start: str) -> PathCollection:
    (found,) = [c for c in ax.collections if str(c.get_label()).startswith(label_start)]
    return found


def test_plot_pareto(run):
    fig = plot_pareto(run, "flops")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(_scatter(ax, "trials").get_offsets()) == 6  # every ok trial, not the duplicate or the failure
    (front,) = [line for line in ax.get_lines() if line.get_label().startswith("Pareto front")]
    assert list(front.get_xdata()) == [30 * M, 50 * M, 80 * M, 200 * M]
    assert list(_scatter(ax, "reference").get_offsets()[0]) == pytest.approx([100 * M, 0.30])
    (flops_only,) = [line for line in ax.get_lines() if "not trained" in line.get_label()]
    assert flops_only.get_label().startswith("spinenet-49")
    assert list(flops_only.get_xdata()) == [SPINENET49_SMOKE_FLOPS] * 2  # a vertical line: no mIoU claimed


def test_plot_pareto_latency_leaves_untrained_references_out(run):
    fig = plot_pareto(run, "latency_ms")
    ax = fig.axes[0]
    assert not [line for line in ax.get_lines() if "not trained" in line.get_label()]
    assert any("not shown: spinenet-49" in t.get_text() for t in fig.texts)
    assert len(_scatter(ax, "reference").get_offsets()) == 1


def test_plot_best_so_far_compares_strategies(run, tmp_path):
    other = load_run(make_run(tmp_path / "rnd", random_rows(), promoted=False, strategy="random"))
    fig = plot_best_so_far([run, other])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    curves = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert curves == {
        "evolution (evo)": pytest.approx([0.40, 0.40, 0.40, 0.40, 0.45, 0.45, 0.50]),
        "random (rnd)": pytest.approx([0.10, 0.35, 0.35]),
    }
    single = plot_best_so_far(run.path)  # a path works too
    assert [line.get_label() for line in single.axes[0].get_lines()] == ["evolution"]


def test_plot_proxy_vs_full(run, tmp_path):
    fig = plot_proxy_vs_full(run)
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 4
    assert "Kendall τ = 0.667" in ax.get_title() and "Spearman ρ = 0.800" in ax.get_title()
    with pytest.raises(RunError) as excinfo:
        plot_proxy_vs_full(load_run(make_run(tmp_path / "r", promoted=False)))
    _one_line_error(excinfo, "nas promote")


def test_plot_per_class_iou(run, tmp_path):
    fig = plot_per_class_iou(run, top=3)
    proxy_ax, full_ax = fig.axes
    assert len(proxy_ax.containers) == 3 and len(full_ax.containers) == 3
    heights = [bar.get_height() for bar in proxy_ax.containers[0]]  # the best candidate, evo-7
    assert heights == pytest.approx(list(json.loads(_ious(0.50)).values()))
    assert [bar.get_height() for bar in full_ax.containers[0]] == pytest.approx(list(json.loads(_ious(0.62)).values()))
    assert full_ax.get_legend().get_texts()[0].get_text().endswith("(seed 1, mIoU 0.620)")  # the seed plotted
    unpromoted = plot_per_class_iou(load_run(make_run(tmp_path / "r", promoted=False)), top=2)
    assert len(unpromoted.axes) == 1 and len(unpromoted.axes[0].containers) == 2


def test_plot_topologies_is_the_arch_draw_drawing(run):
    fig = plot_topologies(run, top=3)
    assert len(fig.axes) == 3
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == ["#1 evo-7", "#2 evo-4", "#3 random-1"]
    alone = draw_topology(run.spec(7))  # what `nas arch draw` saves
    plt.close(alone)
    assert len(fig.axes[0].collections) == len(alone.axes[0].collections) == len(run.spec(7).blocks) + 1
    assert len(fig.axes[0].texts) == len(alone.axes[0].texts)  # the same connections


def test_plot_lineage(run):
    fig = plot_lineage(run, 7)
    ax = fig.axes[0]
    (nodes,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes.get_offsets()) == 4
    _, mutations = _specs()
    edge_labels = sorted(t.get_text() for t in ax.texts if "block" in t.get_text())
    assert edge_labels == sorted(f"{m.kind}\nblock {m.block}" for m in mutations.values())
    assert "evo-7" in ax.get_title()


# ---------------------------------------------------------------------------------- report
def test_write_report(run_dir, tmp_path):
    index = write_report(run_dir, out=tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text()
    sources = re.findall(r"<img src='([^']+)'", page)
    assert {
        "pareto_flops.png",
        "best_so_far.png",
        "topologies.png",
        "lineage.png",
        "per_class_iou.png",
        "proxy_vs_full.png",
    } <= set(sources)
    for name in sources:
        assert (index.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("<table") >= 4  # leaderboard, front, references, lineage, promotion
    assert not re.search(r"(src|href)=['\"]?(https?:|//)|<script|<link", page)  # self-contained
    assert "Kendall τ = 0.6667" in page


def test_report_and_run_show_the_comparison_with_the_baselines(tmp_path):
    path = make_run(tmp_path / "r")
    versus = {"baseline": "deeplabv3-resnet50", "baseline_hash": "b" * 16, "p_value": 0.01, "beats": True}
    versus.update(verdict="beats deeplabv3-resnet50 beyond seed noise", flops_ratio=0.25, params_ratio=0.5)
    comparison = {
        "fidelity": "smoke",
        "seeds": [0, 1],
        "rule": "one-sided Welch t-test at p < 0.05",
        "baselines": [{"name": "deeplabv3-resnet50", "spec_hash": "b" * 16, "mean": 0.3, "std": 0.02, "seeds": 2}],
        "candidates": [{"name": "evo-7", "spec_hash": "c" * 16, "mean": 0.5, "std": 0.01, "seeds": 2}],
    }
    comparison["candidates"][0]["versus"] = [versus]
    summary = json.loads((path / "promoted" / "summary.json").read_text())
    (path / "promoted" / "summary.json").write_text(json.dumps({**summary, "comparison": comparison}))
    table = load_run(path).comparison
    assert table.iloc[0][["name", "mean", "baseline", "baseline_mean", "flops_ratio", "beats"]].tolist() == [
        "evo-7",
        0.5,
        "deeplabv3-resnet50",
        0.3,
        0.25,
        True,
    ]
    page = write_report(path).read_text()
    assert "Against the baselines" in page and "beats deeplabv3-resnet50 beyond seed noise" in page
    assert "Rule: one-sided Welch t-test at p &lt; 0.05" in page and "proxy against smoke fidelity" in page
    assert (
        "The winner, evo-7, beats deeplabv3-resnet50 beyond seed noise: mIoU 0.5 ± 0.01 against "
        "0.3 ± 0.02 over 2 and 2 seeds at smoke fidelity (one-sided Welch p 0.01), at 0.25x the FLOPs "
        "of deeplabv3-resnet50." in page
    )


def test_report_on_unpromoted_run_with_failures_only(tmp_path):
    rows = [r for r in evolution_rows() if r["status"] == "failed"]
    path = make_run(tmp_path / "r", rows, promoted=False)
    index = write_report(path)
    assert index == path / "report" / "index.html"
    page = index.read_text()
    assert "Not promoted yet" in page and "No figure" in page
    assert all((index.parent / src).is_file() for src in re.findall(r"<img src='([^']+)'", page))


def test_report_errors_and_command(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = make_run(tmp_path / "r", [evolution_rows()[3]], promoted=False)
    with pytest.raises(ReportError) as excinfo:
        write_report(path, out=blocker / "report")
    _one_line_error(excinfo, str(blocker / "report"))

    parser = make_parser()
    args = parser.parse_args(["report", str(path), "--out", str(tmp_path / "out")])
    args.func(args)
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "index.html")

    args = parser.parse_args(["report", str(tmp_path / "missing")])
    with pytest.raises(UserError, match="no such run directory"):
        args.func(args)


def test_nas_report_command(tmp_path, capsys):
    from nas.cli import main

    path = make_run(tmp_path / "r", [evolution_rows()[3]], promoted=False)
    assert main(["report", str(path)]) == 0
    assert (path / "report" / "index.html").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "nas: error:" in capsys.readouterr().err


def test_promotion_chooses_among_the_searchs_own_finds_not_its_baselines(tmp_path):
    from nas.search.leaderboard import trials_frame
    from nas.search.promote import select

    rows = evolution_rows()
    rows[0].update(origin="seed", miou=0.9, objective=0.9)  # evolution seeded with the baseline, which won
    path = make_run(tmp_path / "seeded", rows=rows, promoted=False)
    base = frozenset({get_spec("deeplabv3-resnet50").hash})
    assert list(select(trials_frame(path), 2, False)["name"]) == ["deeplabv3-resnet50", "evo-7"]
    assert list(select(trials_frame(path), 2, False, baselines=base)["name"]) == ["evo-7", "evo-4"]
    front = select(trials_frame(path), 5, True, baselines=base)
    assert "deeplabv3-resnet50" not in set(front["name"]) and len(front) >= 1
