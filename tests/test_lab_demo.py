"""``make demo``'s extras: what the monitor says about CTWA's covariance targets (hand-made EMA curves), and the one
figure (eval curves with CI bands, weights, CTWA's covariance EMA) written from run summaries."""

import json

import pytest

from mo_align.lab.demo import DEMO_FIGURE, ctwa_targets, demo_extras
from mo_align.runs.report import PNG_SIGNATURE
from mo_align.runs.summary import normalize_summary


OBJ = ["accuracy", "conciseness", "clarity"]


def run(name, algorithm, ema_accuracy, weights_end=(0.333, 0.333, 0.334)):
    """A summary with 5 training batches: the monitor's accuracy EMA as given, the others well above target."""
    steps = range(1, len(ema_accuracy) + 1)
    start_w, end_w = dict(zip(OBJ, (0.333, 0.333, 0.334))), dict(zip(OBJ, weights_end))
    evals = []
    for step, acc in ((0, 0.26), (3, 0.22), (5, 0.18)):
        means = {"accuracy": acc, "conciseness": 0.5 + step / 10, "clarity": 0.5 + step / 10}
        evals.append({"step": step, "means": means, "ci": {o: [v - 0.03, v + 0.03] for o, v in means.items()}})
    hp = {"weights": [0.333, 0.333, 0.334], "cov_targets": [0.15, 0.08, 0.08]} if algorithm == "ctwa" else {}
    return {
        "run_name": name,
        "algorithm": algorithm,
        "objectives": OBJ,
        "weighting_hyperparameters": hp,
        "eval": evals,
        "weights": [{"step": s, "weights": start_w if s < len(ema_accuracy) else end_w} for s in steps],
        "cov_ema": [
            {"step": s, "values": {"accuracy": v, "conciseness": 0.2, "clarity": 0.1}}
            for s, v in zip(steps, ema_accuracy)
        ],
    }


def test_targets_that_never_bind_are_reported_with_the_monitors_numbers():
    r = normalize_summary(run("ctwa-seed0", "ctwa", [0.18, 0.17, 0.16, 0.165, 0.175], (0.35, 0.33, 0.32)))
    text = ctwa_targets(r)
    assert text.startswith("ctwa-seed0: CTWA's covariance targets never bound: the monitor's covariance EMA stayed")
    assert "accuracy +0.160..+0.180 vs target 0.15 (below on 0 of 5)" in text
    assert "conciseness +0.200..+0.200 vs target 0.08 (below on 0 of 5)" in text
    assert f"accuracy ×{0.35 / 0.333:.3f}, conciseness ×{0.33 / 0.333:.3f}, clarity ×{0.32 / 0.334:.3f}" in text


def test_targets_that_bind_name_the_objective_and_count_the_batches():
    r = normalize_summary(run("ctwa-seed0", "ctwa", [0.2, 0.14, 0.1, 0.12, 0.16], (0.5, 0.3, 0.3)))
    text = ctwa_targets(r)
    assert "targets bound for accuracy: the monitor's covariance EMA fell below the target" in text
    assert "accuracy +0.100..+0.200 vs target 0.15 (below on 3 of 5)" in text
    assert ctwa_targets(normalize_summary(run("linear-seed0", "linear", [0.2] * 5))) is None  # no targets


def test_demo_extras_write_one_figure_and_say_what_ctwa_did(tmp_path):
    from matplotlib import image

    dirs = []
    for name, algorithm in (("linear-seed0", "linear"), ("ctwa-seed0", "ctwa")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mo_summary.json").write_text(json.dumps(run(name, algorithm, [0.18] * 5)))
        dirs.append(str(tmp_path / name))
    lines = demo_extras(dirs, str(tmp_path))
    assert len(lines) == 2 and lines[0].startswith("ctwa-seed0: CTWA's covariance targets never bound")
    assert lines[1].endswith(str(tmp_path / DEMO_FIGURE))
    data = (tmp_path / DEMO_FIGURE).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    height, width = image.imread(tmp_path / DEMO_FIGURE).shape[:2]
    assert width > 1000 and height > 500  # 3 columns x 2 rows of panels
    assert demo_extras(dirs, str(tmp_path / "none"), figure=False) == lines[:1]
    assert not (tmp_path / "none").exists()


def test_demo_figure_panels(tmp_path, monkeypatch):
    """3 eval panels with a CI band per run, a weight panel per run, one covariance panel with the 3 targets."""
    from mo_align.lab import demo

    captured = {}

    def keep(fig, path, handles=None):
        captured["fig"], captured["handles"] = fig, handles

    runs = [normalize_summary(run(n, a, [0.18] * 5)) for n, a in (("linear-seed0", "linear"), ("ctwa-seed0", "ctwa"))]
    monkeypatch.setattr(demo, "save", keep)  # demo draws with mo_align.runs.plotting's save
    demo.demo_figure(runs, str(tmp_path / "x.png"))
    axes = [ax for ax in captured["fig"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [
        "eval accuracy (band: 95 % CI)",
        "eval conciseness (band: 95 % CI)",
        "eval clarity (band: 95 % CI)",
        "linear-seed0: weights",
        "ctwa-seed0: weights",
        "ctwa-seed0: covariance EMA (dotted: targets)",
    ]
    assert all(len(ax.collections) == 2 for ax in axes[:3])  # one band per run
    targets = sorted(round(line.get_ydata()[0], 6) for line in axes[5].get_lines() if line.get_linestyle() == ":")
    assert targets == pytest.approx([0.08, 0.08, 0.15])
    assert {"linear-seed0", "ctwa-seed0", "objective: accuracy"} <= set(captured["handles"])


def test_demo_weights_start_at_zero_and_ctwa_targets_are_in_the_legend(tmp_path):
    """Before: the weight panels spanned min − 0.01 to max + 0.01 (0.323–0.344 for weights 0.333/0.334) and the
    dotted targets had no legend entry. Now every weight panel starts at 0 and spans at least 0.1, the three
    objectives' lines differ in style and marker, and each target c_k is in the figure's legend."""
    from mo_align.lab.demo import demo_fig
    from mo_align.runs.report.plots import _save

    runs = [normalize_summary(run(n, a, [0.18] * 5)) for n, a in (("linear-seed0", "linear"), ("ctwa-seed0", "ctwa"))]
    fig, handles = demo_fig(runs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes[3:5]:  # the two weight panels
        low, high = ax.get_ylim()
        assert low == 0.0 and high >= 0.1 and high > 0.334
        assert len({(str(line.get_linestyle()), line.get_marker()) for line in ax.get_lines()}) == 3
    _save(fig, tmp_path / "demo.png", handles)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"target c_k: accuracy", "target c_k: conciseness", "target c_k: clarity"} <= set(legend)
    assert handles["target c_k: accuracy"].get_ydata()[0] == 0.15
