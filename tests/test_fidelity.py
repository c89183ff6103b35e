"""`nas fidelity`: rank statistics, the training-free fidelity kind, the measured set, the Ray measurement."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from scipy.stats import kendalltau, spearmanr

from nas.cli import main
from nas.common.config import ConfigError
from nas.search.correlation import format_agreement, rank_agreement, spread_over_noise
from nas.search.fidelity import (
    ArchitecturesConfig,
    FidelityConfig,
    FidelityError,
    architectures,
    baseline_of,
    check,
    format_summary,
    jobs_of,
    load_fidelity_config,
    measure,
    read_summary,
    same_preset,
    summarise_file,
    summarise_rows,
    training_settings,
)
from proxy_tasks.task import load_task
from proxy_tasks.trial import run_trial
from proxy_tasks.zero_cost import score
from search_spaces import get_spec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------------- statistics
def test_rank_agreement_of_identical_and_reversed_rankings():
    same = rank_agreement([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert (same["tau"], same["rho"], same["n"]) == (pytest.approx(1.0), pytest.approx(1.0), 5)
    assert same["tau_low"] == pytest.approx(1.0) == same["tau_high"] and same["includes_zero"] is False
    reverse = rank_agreement([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert reverse["tau"] == pytest.approx(-1.0) == reverse["tau_high"]


def test_rank_agreement_matches_scipy_and_its_interval_holds_the_estimate():
    x = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4]
    y = [0.2, 0.4, 0.5, 0.8, 0.6, 0.1, 0.9, 0.3]
    stats = rank_agreement(x, y, seed=3)
    assert stats["tau"] == pytest.approx(kendalltau(x, y).statistic)
    assert stats["rho"] == pytest.approx(spearmanr(x, y).statistic)
    assert stats["tau_low"] <= stats["tau"] <= stats["tau_high"]
    assert stats["rho_low"] <= stats["rho"] <= stats["rho_high"]
    assert rank_agreement(x, y, seed=3) == stats  # seeded: the same interval every time
    assert "tau +0.71" in format_agreement(stats)


def test_rank_agreement_flags_an_interval_that_includes_zero_and_drops_pairs_without_a_number():
    noise = rank_agreement([1, 2, 3, 4, 5, 6], [3, 1, 6, 2, 5, 4])
    assert noise["includes_zero"] is True and "includes 0" in format_agreement(noise)
    partial = rank_agreement([1, 2, math.nan, 4, None], [1, 2, 3, math.nan, 5])
    assert partial["n"] == 2 and partial["tau"] is None  # two pairs: too few to say anything
    assert "too few pairs" in format_agreement(partial)


def test_spread_over_noise_is_std_of_means_over_mean_seed_std():
    # means 1 and 5 (std 2.828), seed stds 1.414 and 1.414: ratio 2
    assert spread_over_noise([[0, 2], [4, 6]]) == pytest.approx(2.0)
    assert spread_over_noise([[1], [2]]) is None  # one seed each: no noise to compare with


# ---------------------------------------------------------------------------------- training-free fidelity
def test_a_zero_cost_fidelity_scores_the_untrained_network_like_zero_cost_score(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    task = load_task("synthetic")
    fid = replace(task.fidelity("smoke"), zero_cost="synflow")
    task = replace(task, fidelities={**task.fidelities, "zc": fid})
    spec = get_spec("spinenet-49")
    result = run_trial(spec, task, "zc", seed=1)
    assert result.score == score(spec, task, "zc", "synflow", seed=1) > 0
    assert result.steps == 0 and math.isnan(result.miou) and result.flops > 0 and result.params > 0
    assert run_trial(spec, task, "zc", seed=1).score == result.score  # deterministic by seed


def test_the_synthetic_task_ships_a_training_free_preset_of_every_score():
    task = load_task("synthetic")
    named = {task.preset(f).zero_cost for f in task.fidelities if task.preset(f).zero_cost}
    assert named == {"synflow", "naswot", "grad_norm", "snip", "params", "flops"}


def test_an_unknown_zero_cost_name_is_a_config_error(tmp_path):
    bad = tmp_path / "task.yaml"
    bad.write_text(yaml.safe_dump({"name": "t", "fidelities": {"zc": {"zero_cost": "magic"}}}))
    with pytest.raises(ConfigError, match="zero_cost"):
        load_task(str(bad))


# ---------------------------------------------------------------------------------- the measured set
def test_the_ground_truth_config_measures_40_distinct_networks_in_a_fixed_order():
    config = load_fidelity_config(ROOT / "launch" / "configs" / "ground-truth-cpu.yaml")
    archs = architectures(config)
    assert len(archs) == 40 == len({a.spec.network_hash for a in archs})
    assert [a.origin for a in archs].count("mutant") == 8 and archs[0].label == "deeplabv3-resnet50"
    assert [a.spec.hash for a in architectures(config)] == [a.spec.hash for a in archs]
    jobs = jobs_of(config, archs)
    assert len(jobs) == 40 * (7 + 2) and len({job.id for _, job in jobs}) == len(jobs)


def test_the_gpu_ground_truth_measures_the_same_networks_eight_to_a_gpu():
    cpu = load_fidelity_config(ROOT / "launch" / "configs" / "ground-truth-cpu.yaml")
    gpu = load_fidelity_config(ROOT / "launch" / "configs" / "ground-truth-gpu.yaml")
    assert [a.spec.hash for a in architectures(gpu)] == [a.spec.hash for a in architectures(cpu)]
    assert gpu.reference == "full-1k" and gpu.seeds_of("full-1k") == 2 and "promote-cpu" in gpu.fidelities
    assert gpu.resources.gpus_per_trial * gpu.resources.max_concurrent == 1.0
    assert len(jobs_of(gpu, architectures(gpu))) == 40 * (6 + 2 + 1 + 2)
    check(gpu)  # every network at every fidelity of the task


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="reference"):
        FidelityConfig(fidelities=("proxy",), reference="full")
    with pytest.raises(ConfigError, match="fidelity_seeds"):
        FidelityConfig(fidelities=("proxy", "full"), reference="full", fidelity_seeds={"smoke": 2})
    with pytest.raises(ConfigError, match="random"):
        ArchitecturesConfig(random=-1)


# ---------------------------------------------------------------------------------- summaries
def _row(name, fidelity, seed, miou=None, score=None, status="ok"):
    return dict(spec_hash=name, name=name, fidelity=fidelity, seed=seed, miou=miou, score=score, status=status)


def test_summary_ranks_by_the_mean_over_seeds_and_uses_the_score_of_training_free_fidelities():
    reference = (("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4))
    rows = [_row(n, "ref", s, miou=m + 0.01 * s) for n, m in reference for s in (0, 1)]
    rows += [_row(n, "zc", 0, score=v) for n, v in (("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0))]
    rows += [_row("a", "cheap", 0, miou=0.9, status="failed")]  # failed rows do not count
    summary = summarise_rows(rows, ["zc", "cheap", "ref"], "ref")
    assert summary["fidelities"]["zc"]["metric"] == "score"
    assert summary["fidelities"]["zc"]["vs_reference"]["tau"] == pytest.approx(-1.0)
    assert summary["fidelities"]["cheap"]["architectures"] == 0
    assert summary["fidelities"]["ref"]["seed_to_seed"]["tau"] == pytest.approx(1.0)
    assert summary["means"]["b"]["ref"] == pytest.approx(0.205)
    assert summary["fidelities"]["ref"]["seconds"] is None  # these rows say nothing of time
    # the zc rows are rows 8 to 11: 81, 91, 101 and 111 s
    timed = [{**r, "train_seconds": 10.0 * i, "eval_seconds": 1.0} for i, r in enumerate(rows)]
    assert summarise_rows(timed, ["zc", "ref"], "ref")["fidelities"]["zc"]["seconds"] == pytest.approx(96.0)


def test_the_summary_judges_every_network_against_the_baseline_at_the_reference():
    def ref(name, mious, flops):
        return [{**_row(name, "ref", s, miou=m), "flops": flops} for s, m in enumerate(mious)]

    rows = ref("base", [0.30, 0.31], 100.0)
    rows += ref("better-cheap", [0.40, 0.41], 40.0)  # beats it at 0.4x the FLOPs
    rows += ref("better-noisy", [0.20, 0.60], 30.0)  # a higher mean within the seed noise
    rows += ref("worse", [0.10, 0.11], 200.0)
    rows += [_row("base", "cheap", 0, miou=0.9)]
    versus = summarise_rows(rows, ["cheap", "ref"], "ref", baseline="base")["versus_baseline"]
    assert versus["baseline"] == "base" and versus["mean"] == pytest.approx(0.305) and versus["seeds"] == 2
    by = {r["name"]: r for r in versus["architectures"]}
    assert [r["name"] for r in versus["architectures"]] == ["better-cheap", "better-noisy", "worse"]
    assert by["better-cheap"]["beats"] and by["better-cheap"]["flops_ratio"] == pytest.approx(0.4)
    assert by["better-noisy"]["beats"] is False and by["better-noisy"]["p_value"] > 0.05
    assert by["worse"]["beats"] is False and by["worse"]["flops_ratio"] == pytest.approx(2.0)
    text = format_summary(summarise_rows(rows, ["cheap", "ref"], "ref", baseline="base"))
    assert "beside base at ref (mIoU 0.3050" in text
    assert "1 of 3 beat it, 1 with Holm's correction for the 3 tests: better-cheap 0.4050" in text
    assert by["better-cheap"]["beats_holm"] and by["worse"]["beats_holm"] is False
    assert "the best at <= 0.5x its FLOPs (2 networks): better-cheap" in text
    one_seed = [r for r in rows if r["seed"] == 0 or r["name"] == "base"]  # the others: one seed each
    text = format_summary(summarise_rows(one_seed, ["ref"], "ref", baseline="base"))
    assert "beat it" not in text and "3 with too few seeds on one side to compare" in text
    assert summarise_rows(rows, ["ref"], "ref", baseline="absent")["versus_baseline"] is None
    assert summarise_rows(rows, ["ref"], "ref")["versus_baseline"] is None


def test_an_infinite_score_ranks_at_its_end_rather_than_dropping_out():
    rows = [_row(n, "ref", 0, miou=m) for n, m in (("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4))]
    rows += [_row(n, "zc", 0, score=v) for n, v in (("a", -math.inf), ("b", 1.0), ("c", 2.0), ("d", math.inf))]
    rows += [_row("e", "zc", 0, score=math.nan), _row("e", "ref", 0, miou=0.0)]  # NaN has no place: left out
    agreement = summarise_rows(rows, ["zc", "ref"], "ref")["fidelities"]["zc"]["vs_reference"]
    assert agreement["n"] == 4 and agreement["tau"] == pytest.approx(1.0)


def test_seed_to_seed_pairs_values_by_seed_not_by_the_order_trials_finished():
    values = {"a": (0.1, 0.5), "b": (0.2, 0.4), "c": (0.3, 0.3), "d": (0.4, 0.2)}  # seed 1 reverses seed 0
    rows = [_row(n, "ref", s, miou=v[s]) for n, v in values.items() for s in ((1, 0) if n == "b" else (0, 1))]
    summary = summarise_rows(rows, ["ref"], "ref")
    assert summary["fidelities"]["ref"]["seed_to_seed"]["tau"] == pytest.approx(-1.0)
    gap = [r for r in rows if not (r["name"] == "d" and r["seed"] == 1)]  # d lost seed 1: left out of the pair
    assert summarise_rows(gap, ["ref"], "ref")["fidelities"]["ref"]["seed_to_seed"] == {
        "tau": pytest.approx(-1.0),
        "pairs": [pytest.approx(-1.0)],
        "n": 3,
    }


def test_networks_that_share_a_name_are_kept_apart(tmp_path):
    rows = [_row("x", "ref", s, miou=0.1 + s / 10) for s in (0, 1)]
    rows += [{**_row("y", "ref", s, miou=0.5 + s / 100), "name": "x"} for s in (0, 1)]
    rows += [_row("base", "ref", s, miou=0.3 + s / 100) for s in (0, 1)]
    summary = summarise_rows(rows, ["ref"], "ref", baseline="base")
    assert set(summary["means"]) == {"x (x)", "x (y)", "base"}
    assert sorted(r["seeds"] for r in summary["versus_baseline"]["architectures"]) == [2, 2]
    spec = tmp_path / "spinenet-twin.json"  # another network under a published network's name
    twin = get_spec("spinenet-49").to_dict()
    twin["blocks"][6]["dilation"] = 2
    spec.write_text(json.dumps(twin))
    config = FidelityConfig(
        fidelities=("zc-params",),
        reference="zc-params",
        architectures=ArchitecturesConfig(published=("spinenet-49", str(spec)), random=1),
    )
    with pytest.raises(ConfigError, match="different networks share the name spinenet-49"):
        architectures(config)


def test_a_set_too_small_to_rank_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "small.yaml"
    fields = {"fidelities": ["zc-params"], "reference": "zc-params"}
    path.write_text(yaml.safe_dump({**fields, "architectures": {"published": ["spinenet-49"], "random": 1}}))
    assert main(["fidelity", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "2 distinct networks; a ranking needs at least 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_results_files_with_wrong_types_or_no_reference_rows_are_one_error(tmp_path):
    row = {"fidelity": "a", "seed": 0, "miou": 0.5}
    for results, why in (
        ({"n": [{**row, "fidelity": ["a"]}]}, "must be strings"),
        ({"n": [{**row, "seed": "0"}]}, "seed must be an integer"),
        ({"n": [row]}, "no result at its reference fidelity 'b'"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"results": results, "reference": "b" if "reference" in why else "a"}))
        with pytest.raises(FidelityError, match=why):
            summarise_file(bad)


def test_an_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "gt.yaml"
    path.write_text(yaml.safe_dump({"fidelities": ["zc-params"], "reference": "zc-params"}))
    code = main(["fidelity", "--config", str(path), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [err.strip()]  # the error is the only line
    assert err.startswith("nas: error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "out").exists()


def test_rows_of_other_task_settings_are_refused_and_a_new_config_is_recorded(tmp_path, monkeypatch):
    import nas.search.fidelity as fidelity

    config = FidelityConfig(fidelities=("zc-params",), reference="zc-params", architectures=ArchitecturesConfig())
    out = tmp_path / "gt"
    monkeypatch.setattr(fidelity, "_train", lambda *args: None)  # what is recorded, not what is trained
    monkeypatch.setattr(fidelity, "connect_ray", lambda *args: False)
    measure(config, out, log=lambda _: None)
    saved = yaml.safe_load((out / "fidelity.yaml").read_text())
    assert saved["task_settings"]["optimizer"]["lr"] == load_task("synthetic").optimizer.lr
    assert "root" not in saved["task_settings"]["dataset"]  # where the data lives does not change a trial
    saved["task_settings"]["optimizer"]["lr"] *= 2  # as if measured with another learning rate
    (out / "fidelity.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(FidelityError, match=r"other task settings \(optimizer\) than the task has now"):
        measure(config, out, log=lambda _: None)
    del saved["task_settings"]  # a directory from before the settings were recorded is taken as it is
    (out / "fidelity.yaml").write_text(yaml.safe_dump(saved))
    measure(replace(config, baseline="spinenet-49"), out, log=lambda _: None)
    assert yaml.safe_load((out / "fidelity.yaml").read_text())["baseline"] == "spinenet-49"  # the config now


def test_the_baseline_must_be_a_published_network_and_defaults_to_the_first():
    config = FidelityConfig(
        fidelities=("zc-params",), reference="zc-params", architectures=ArchitecturesConfig(random=1)
    )
    assert baseline_of(config, architectures(config)) == "deeplabv3-resnet50"
    with pytest.raises(ConfigError, match="baseline: 'random-1' is not among the published"):
        check(replace(config, baseline="random-1"))


def test_the_stored_gpu_results_reproduce_the_readme_figures():
    summary = summarise_file(RESULTS / "synthetic-proxy-gpu.json")
    proxy = summary["fidelities"]["proxy-gpu"]
    assert proxy["vs_reference"]["tau"] == pytest.approx(0.643, abs=5e-4)
    assert proxy["vs_reference"]["rho"] == pytest.approx(0.810, abs=5e-4)
    assert proxy["seed_to_seed"]["tau"] == pytest.approx(0.81, abs=5e-3)
    assert proxy["spread_over_noise"] == pytest.approx(3.18, abs=5e-3)
    assert summary["fidelities"]["full-1k"]["seed_to_seed"]["tau"] == pytest.approx(0.857, abs=5e-4)


def test_the_stored_cpu_ground_truth_reproduces_the_readme_figures():
    """The README's CPU ground-truth figures, as `nas fidelity --results` computes them from the
    stored rows (all 40 networks): this pins what the README says, and moves with it."""
    folder = RESULTS / "ground-truth-cpu"
    summary = read_summary(folder)
    fidelities = summary["fidelities"]
    assert fidelities["promote-cpu"]["architectures"] == 40
    assert fidelities["promote-cpu"]["seed_to_seed"]["tau"] == pytest.approx(0.731, abs=5e-4)
    proxy = fidelities["proxy"]["vs_reference"]
    assert (proxy["n"], proxy["tau"], proxy["tau_low"], proxy["rho"]) == pytest.approx(
        (40, 0.666, 0.535, 0.828), abs=5e-4
    )
    taus = {f: fidelities[f]["vs_reference"]["tau"] for f in fidelities if f.startswith("zc-")}
    expected = {
        "params": 0.156,
        "flops": 0.395,
        "synflow": -0.105,
        "naswot": 0.036,
        "grad-norm": -0.490,
        "snip": -0.444,
    }
    assert taus == pytest.approx({f"zc-{k}": v for k, v in expected.items()}, abs=5e-4)
    assert all(fidelities[f]["vs_reference"]["tau_high"] < 0.6 for f in taus)  # none reaches the goal's 0.6
    versus = {r["name"]: r for r in summary["versus_baseline"]["architectures"]}
    assert len(versus) == 39 and not any(r["beats"] for r in versus.values())
    cheap = [r for r in versus.values() if r["flops_ratio"] <= 0.5]
    best = max(cheap, key=lambda r: r["mean"])
    assert (best["name"], best["mean"], best["flops_ratio"]) == pytest.approx(
        ("deeplabv3-resnet50-m4", 0.3389, 0.478), abs=5e-4
    )
    assert len(_table(folder)) == 360


def test_a_file_that_is_not_a_results_file_is_one_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": []}))
    with pytest.raises(FidelityError, match="not a fidelity results file"):
        summarise_file(bad)
    assert main(["fidelity", "--results", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error:") and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_measurement_without_a_config(tmp_path, capsys):
    assert main(["fidelity", "--out", str(tmp_path / "new")]) == 2
    assert "needs --config" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------- on Ray
def test_measure_trains_each_job_once_resumes_and_grows(tmp_path, monkeypatch, local_ray):
    # One Ray for the whole test: `connect_ray` joins a Ray already up and leaves it running.
    config = FidelityConfig(
        name="t",
        fidelities=("zc-params", "smoke"),
        reference="smoke",
        seeds=1,
        architectures=ArchitecturesConfig(published=("spinenet-49", "deeplabv3-resnet50"), random=1),
    )
    config = replace(config, resources=replace(FidelityConfig().resources, max_concurrent=2))
    out = tmp_path / "gt"
    lines: list[str] = []
    summary = measure(config, out, log=lines.append)
    rows = _table(out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    zc = [r for r in rows if r["fidelity"] == "zc-params"]
    assert all(r["score"] == r["params"] for r in zc)  # the params score is the parameter count
    assert summary["fidelities"]["zc-params"]["vs_reference"]["n"] == 3
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))

    again: list[str] = []
    measure(None, out, log=again.append)  # --resume: nothing left to train
    assert len(_table(out)) == 6 and "(6 done)" in again[0] and len(again) == 1  # no Ray, no trial

    grown = replace(config, fidelity_seeds={"smoke": 2})
    measure(grown, out, log=lines.append)  # one more seed of smoke: only those three train
    rows = _table(out)
    assert len(rows) == 9 and sorted(r["seed"] for r in rows if r["fidelity"] == "smoke") == [0, 0, 0, 1, 1, 1]

    saved = yaml.safe_load((out / "fidelity.yaml").read_text())
    saved["presets"]["smoke"]["steps"] = 99  # as if the task's preset had changed since
    (out / "fidelity.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(FidelityError, match="other settings"):
        measure(grown, out, log=lines.append)


def _table(out: Path) -> list[dict]:
    from nas.search.store import read_rows

    return read_rows(out / "trials.parquet")


def test_the_stored_cpu_ground_truth_still_describes_the_shipped_presets():
    """The rows under benchmarks/results/ground-truth-cpu/ were measured with the presets its
    fidelity.yaml records: they must still be the synthetic task's, or the figures no longer hold."""
    folder = RESULTS / "ground-truth-cpu"
    saved = yaml.safe_load((folder / "fidelity.yaml").read_text())
    shipped = load_fidelity_config(ROOT / "launch" / "configs" / "ground-truth-cpu.yaml")
    task = load_task(shipped.task)
    from nas.common.config import to_dict
    from nas.common.jsonutil import json_ready

    assert set(saved["presets"]) == set(shipped.fidelities)
    for fidelity, settings in saved["presets"].items():
        assert same_preset(settings, to_dict(task.preset(fidelity))), fidelity
    assert saved["task_settings"] == training_settings(task)  # the data, optimiser and augmentation too
    assert saved["architectures"] == json_ready(to_dict(shipped.architectures)) | {
        "published": list(shipped.architectures.published)
    }


def test_a_preset_setting_added_since_rows_were_measured_counts_as_unchanged_at_its_default():
    from nas.common.config import to_dict

    current = to_dict(load_task("synthetic").preset("promote-cpu"))
    recorded = {k: v for k, v in current.items() if k != "eval_flip"}  # as written before eval_flip existed
    assert same_preset(recorded, current)
    assert not same_preset({**recorded, "steps": 599}, current)
    assert not same_preset(recorded, {**current, "eval_flip": True})  # the new setting changed the training
    assert not same_preset({**recorded, "gone": 1}, current)
