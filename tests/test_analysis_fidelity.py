"""The notebook view of a fidelity measurement: tables and figure from `nas.search.fidelity`'s summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import FidelityLoadError, load_fidelity, plot_fidelity
from nas.search.fidelity import read_summary, summarise_file

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_the_stored_gpu_results_as_tables():
    gpu = load_fidelity(RESULTS / "synthetic-proxy-gpu.json")
    summary = summarise_file(RESULTS / "synthetic-proxy-gpu.json")
    assert gpu.reference == "full-1k"
    row = gpu.agreement.loc["proxy-gpu"]
    assert row["tau"] == pytest.approx(summary["fidelities"]["proxy-gpu"]["vs_reference"]["tau"])
    assert row["tau_low"] <= row["tau"] <= row["tau_high"] and row["n"] == 8 and not row["includes_zero"]
    assert gpu.agreement.loc["full-1k", "seed_to_seed_tau"] == pytest.approx(0.857, abs=5e-4)
    means = gpu.means
    assert list(means.columns) == ["proxy-gpu", "full-1k"] and len(means) == 8
    assert means["full-1k"].is_monotonic_decreasing  # best first by the reference
    assert means.loc["deeplabv3-resnet50", "full-1k"] == pytest.approx(
        summary["means"]["deeplabv3-resnet50"]["full-1k"]
    )
    assert set(gpu.versus_baseline.index) == set(means.index) - {"deeplabv3-resnet50"}
    assert "proxy-gpu" in repr(gpu) and "tau +0.64" in repr(gpu)


def test_a_measurement_directory_reads_as_nas_fidelity_summarises_it():
    folder = RESULTS / "ground-truth-cpu"
    m = load_fidelity(folder)
    summary = read_summary(folder)
    assert list(m.agreement.index) == list(summary["fidelities"])
    assert m.agreement.loc["proxy", "seconds"] == pytest.approx(summary["fidelities"]["proxy"]["seconds"])
    versus = m.versus_baseline
    assert list(versus.columns) == ["mean", "std", "seeds", "p_value", "beats", "beats_holm", "flops_ratio"]
    assert (versus["flops_ratio"] > 0).all() and versus["mean"].is_monotonic_decreasing


def test_the_figure_plots_each_architecture_once_and_names_the_agreement():
    m = load_fidelity(RESULTS / "synthetic-proxy-gpu.json")
    fig = plot_fidelity(m, "proxy-gpu")
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 8 and len(ax.texts) == 8
    assert "Kendall tau +0.64" in ax.get_title() and "n 8" in ax.get_title()
    with pytest.raises(FidelityLoadError, match="not a measured fidelity other than the reference"):
        plot_fidelity(m, "full-1k")


def test_what_is_not_a_measurement_is_one_error(tmp_path):
    with pytest.raises(FidelityLoadError, match="not a fidelity measurement"):
        load_fidelity(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(FidelityLoadError, match="not a fidelity results file"):
        load_fidelity(bad)
