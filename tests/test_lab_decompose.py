"""Δ accuracy split into between-style and within-style parts: by hand, its exactness, its intervals against the
two-stage bootstrap of mo_align.stats, the trainer's per-sample labels it needs, and its section in mo-align report."""

import json
import math

import numpy as np
import pytest

from mo_align.lab.decompose import decompose, decompose_runs, load_styles, reading, split_accuracy
from mo_align.lab.styles import STYLE_CLASSES, style_tallies
from mo_align.stats import hierarchical_delta_ci, paired_delta_ci


J = {s: i for i, s in enumerate(STYLE_CLASSES)}


def _totals(labels, acc):
    c, s = style_tallies(labels, acc)
    return c.sum(0), s.sum(0)


def test_split_by_hand():
    """Start: A ×3 (accuracy 2/3), G ×1 (0): mean 1/2. Final: G ×3 (2/3), A ×1 (1): mean 3/4.
    between = (1/4 − 3/4)·2/3 + (3/4 − 1/4)·0 = −1/3; within = 1/4·(1 − 2/3) + 3/4·(2/3 − 0) = 7/12; sum 1/4."""
    start = _totals([["A", "A"], ["G", "A"]], [[1, 0], [0, 1]])
    final = _totals([["G", "G"], ["G", "A"]], [[1, 0], [1, 1]])
    d = split_accuracy(*start, *final)
    assert (d.delta, d.between, d.within) == pytest.approx((1 / 4, -1 / 3, 7 / 12))


def test_a_style_new_at_the_end_counts_as_moved_and_one_gone_as_moved_away():
    """Start all A at 1/2; final half A (1/2), half B (1), B absent at the start: acc_0(B) := acc_1(B) = 1, so
    between = (1/2 − 1)·1/2 + 1/2·1 = 1/4, within = 0. Reversed, B's mass leaves: between −1/4, within 0."""
    a_only = _totals([["A", "A"], ["A", "A"]], [[1, 0], [1, 0]])
    mixed = _totals([["A", "B"], ["A", "B"]], [[1, 1], [0, 1]])
    d = split_accuracy(*a_only, *mixed)
    assert (d.delta, d.between, d.within) == pytest.approx((1 / 4, 1 / 4, 0.0))
    d = split_accuracy(*mixed, *a_only)
    assert (d.delta, d.between, d.within) == pytest.approx((-1 / 4, -1 / 4, 0.0))


def test_the_parts_sum_to_the_change_of_the_mean_exactly():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.choice(list(STYLE_CLASSES), size=(2, 30, 4))
        acc = rng.integers(0, 2, size=(2, 30, 4)).astype(float)
        acc[rng.random(acc.shape) < 0.05] = np.nan  # unscored samples are left out, as nanmean leaves them
        d = split_accuracy(*_totals(labels[0], acc[0]), *_totals(labels[1], acc[1]))
        assert d.between + d.within == pytest.approx(d.delta, abs=1e-12)
        assert d.delta == pytest.approx(np.nanmean(acc[1]) - np.nanmean(acc[0]), abs=1e-12)


def _simulated(seeds=3, prompts=64, samples=4, seed=1):
    """A start where A (accuracy ~0.6) and G (~0.3) mix; finals with more G, each seed a little different."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(prompts)[:, None]

    def draw(p_g, acc_a, acc_g):
        labels = np.where(rng.random((prompts, samples)) < p_g, "G", "A")
        p = np.where(labels == "A", acc_a, acc_g) * (0.5 + difficulty)
        return labels, (rng.random((prompts, samples)) < p).astype(float)

    start = draw(0.2, 0.6, 0.3)
    finals = [draw(0.6 + 0.05 * s, 0.6, 0.35 + 0.05 * s) for s in range(seeds)]
    return start, finals


def test_one_seed_interval_is_the_paired_prompt_bootstrap():
    (s_lab, s_acc), finals = _simulated(seeds=1)
    f_lab, f_acc = finals[0]
    out = decompose([style_tallies(f_lab, f_acc)], style_tallies(s_lab, s_acc), n_boot=4000, seed=3)
    ref = paired_delta_ci(s_acc, f_acc, n_boot=4000, seed=3)
    assert out["delta"]["estimate"] == pytest.approx(ref.estimate, abs=1e-12)
    assert (out["delta"]["low"], out["delta"]["high"]) == pytest.approx((ref.low, ref.high), abs=0.012)
    assert out["between"]["estimate"] + out["within"]["estimate"] == pytest.approx(ref.estimate, abs=1e-12)
    for p in ("between", "within", "within_minus_between"):
        assert out[p]["low"] <= out[p]["estimate"] <= out[p]["high"]


def test_several_seeds_use_the_two_stage_bootstrap_and_the_pooled_start():
    (s_lab, s_acc), finals = _simulated(seeds=3)
    tallies = [style_tallies(lab, acc) for lab, acc in finals]
    out = decompose(tallies, style_tallies(s_lab, s_acc), n_boot=4000, seed=5)
    per_prompt = np.stack([acc.mean(axis=1) for _, acc in finals])  # (seeds, prompts)
    ref = hierarchical_delta_ci(per_prompt, s_acc.mean(axis=1), n_boot=4000, seed=5)
    assert out["seeds"] == 3 and out["delta"]["estimate"] == pytest.approx(ref.estimate, abs=1e-12)
    assert (out["delta"]["low"], out["delta"]["high"]) == pytest.approx((ref.low, ref.high), abs=0.015)
    parts = out["per_seed"]
    assert np.mean(parts["between"]) == pytest.approx(out["between"]["estimate"])
    assert np.add(parts["between"], parts["within"]) == pytest.approx(parts["delta"], abs=1e-12)
    # the style table: G's share rose from the start's to the seeds' mean final share
    g = out["styles"]["G"]
    assert g["share_start"] == pytest.approx(np.mean(s_lab == "G"))
    assert g["share_final"] == pytest.approx(np.mean([np.mean(lab == "G") for lab, _ in finals]))


def _ci(est, low, high):
    return {"estimate": est, "low": low, "high": high}


def test_reading_names_the_part_that_dominates():
    loss = _ci(-0.1, -0.15, -0.05)
    moved = {"delta": loss, "between": _ci(-0.12, -0.15, -0.09), "within": _ci(0.02, -0.01, 0.05)}
    assert reading({**moved, "within_minus_between": _ci(0.14, 0.1, 0.18)}).startswith("moved along the front")
    damage = {"delta": loss, "between": _ci(-0.01, -0.03, 0.01), "within": _ci(-0.09, -0.12, -0.06)}
    assert reading({**damage, "within_minus_between": _ci(-0.08, -0.12, -0.04)}).startswith("optimizer damage")
    # within larger but the difference not significant: no claim of damage
    assert reading({**damage, "within_minus_between": _ci(-0.08, -0.2, 0.01)}).startswith("unclear")
    assert reading({**moved, "delta": _ci(-0.1, -0.2, 0.01), "within_minus_between": _ci(0, 0, 0)}) == (
        "no significant accuracy loss"
    )


def _payload(start, final, labels=True):
    def rec(step, pair):
        lab, acc = pair
        rewards = np.stack([acc, np.zeros_like(acc), np.ones_like(acc)], axis=-1).tolist()
        return {"step": step, "rewards": rewards, **({"labels": lab.tolist()} if labels else {})}

    return {"objectives": ["accuracy", "conciseness", "clarity"], "evals": [rec(0, start), rec(50, final)]}


def test_load_styles_reads_labels_and_refuses_malformed_files(tmp_path):
    (start, finals) = _simulated(seeds=1)
    path = tmp_path / "lab_eval_scores.json"
    path.write_text(json.dumps(_payload(start, finals[0])))
    data = load_styles(str(path))
    assert data["start"]["labels"].shape == (64, 4) and data["final"]["step"] == 50
    assert np.array_equal(data["final"]["acc"], finals[0][1])
    path.write_text(json.dumps(_payload(start, finals[0], labels=False)))
    assert load_styles(str(path)) is None  # recorded before labels existed: nothing to decompose
    bad = _payload(start, finals[0])
    bad["evals"][1]["labels"][0][0] = "Z"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"lab_eval_scores.json: evals\[1\].labels: unknown style"):
        load_styles(str(path))
    bad["evals"][1]["labels"] = bad["evals"][1]["labels"][:3]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"evals\[1\]: labels \(3, 4\) do not match rewards \(64, 4, 3\)"):
        load_styles(str(path))


def test_decompose_runs_pools_the_starts_of_one_warm_start():
    """Two runs of one configuration: their starts are pooled into one baseline, as the seed-level tables do."""
    (s_lab, s_acc), finals = _simulated(seeds=2)
    (s2_lab, s2_acc), _ = _simulated(seeds=1, seed=9)

    def entry(name, start, final):
        return {"run": name, "configuration": "linear", "warm_start": "", "start": start, "final": final}

    entries = [
        entry(f"linear-seed{i}", {"labels": sl, "acc": sa}, {"labels": fl, "acc": fa})
        for i, ((sl, sa), (fl, fa)) in enumerate(zip([(s_lab, s_acc), (s2_lab, s2_acc)], finals))
    ]
    out = decompose_runs(entries, n_boot=200)
    base = np.concatenate([s_acc, s2_acc], axis=1).mean()
    assert out["runs"]["linear-seed0"]["delta"]["estimate"] == pytest.approx(finals[0][1].mean() - base)
    mean_delta = np.mean([f.mean() for _, f in finals]) - base
    assert out["configurations"]["linear"]["delta"]["estimate"] == pytest.approx(mean_delta)
    assert out["configurations"]["linear"]["seeds"] == 2


def test_trainer_records_one_label_per_eval_sample(tiny_model_dir, tmp_path):
    """The labeler sees each completion's text; its labels line up with that sample's rewards (a reward that
    scores the text's length in characters, a labeler that writes it)."""
    from mo_align.lab.evidence import EvalScoreRecorder
    from mo_align.lab.styles import style_of
    from mo_align.rewards.common import completion_text
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_short, tiny_config, tiny_dataset

    def chars(prompts, completions, completion_ids=None, **kwargs):
        return [float(len(completion_text(c))) for c in completions]

    args = tiny_config(str(tmp_path), mo_eval_temperature=1.0, mo_eval_num_samples=3, mo_eval_loss=False)
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[chars, reward_short],
        args=args,
        train_dataset=tiny_dataset(8),
        eval_dataset=tiny_dataset(5),
    )
    recorder = EvalScoreRecorder(trainer)
    assert trainer.mo_eval_labeler is style_of  # the lab's recorder labels answer styles by default
    trainer.mo_eval_labeler = lambda text: f"n{len(text)}"
    trainer.evaluate()
    record = trainer.mo_eval_samples[-1]
    rewards = np.asarray(record["rewards"])
    assert np.asarray(record["labels"]).shape == (5, 3) == rewards.shape[:2]
    assert record["labels"] == [[f"n{int(v)}" for v in row] for row in rewards[:, :, 0]]
    recorder.write(str(tmp_path / "scores.json"))
    assert json.loads((tmp_path / "scores.json").read_text())["evals"][-1]["labels"] == record["labels"]


def test_report_has_the_section_when_runs_recorded_styles(tmp_path, capsys):
    from mo_align.cli import main
    from tests.test_report import summary, write_run_dirs

    (start, finals) = _simulated(seeds=2)
    runs = [summary(f"linear-seed{s}", "linear", s, (0.5, 0.5, 0.5), (0.4, 0.8, 0.6)) for s in range(2)]
    runs.append(summary("ctwa-seed0", "ctwa", 0, (0.5, 0.5, 0.5), (0.5, 0.6, 0.6)))
    dirs = write_run_dirs(tmp_path, runs)
    for d, final in zip(dirs[:2], finals):
        with open(f"{d}/lab_eval_scores.json", "w") as f:
            json.dump(_payload(start, final), f)
    out = tmp_path / "out"
    assert main(["report", *dirs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Δ accuracy: between styles vs within styles" in printed
    row = next(line for line in printed.splitlines() if line.strip().startswith("linear "))
    assert row.split()[1] == "2"  # both seeds; ctwa recorded no styles and has no row
    assert not any(line.strip().startswith("ctwa ") and "between" in line for line in printed.splitlines())
    md = (out / "report.md").read_text()
    assert "## Δ accuracy: between styles vs within styles" in md and "| linear | 2 |" in md
    saved = json.loads((out / "report.json").read_text())["style_decomposition"]["configurations"]["linear"]
    assert math.isclose(saved["between"]["estimate"] + saved["within"]["estimate"], saved["delta"]["estimate"])
    # a malformed file is refused in one line naming it, before anything is written
    with open(f"{dirs[0]}/lab_eval_scores.json", "w") as f:
        f.write('{"objectives": ["accuracy"], "evals": "x"}')
    assert main(["report", *dirs, "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "lab_eval_scores.json: 'evals' must be a non-empty list" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out2").exists()
