"""The lab end to end on a minimal budget: warm start, two algorithms in parallel, report; then `mo-align report`."""

import json
import sys

import pytest

from mo_align.lab.sft import sft_key
from mo_align.lab.task import (
    BASE_SHARES,
    EVAL_PROMPTS,
    REGIMES,
    STYLES,
    TRADEOFF_SHARE,
    Regime,
    compact_regime,
    get_regime,
    prompt_text,
    sample_completion,
    split_problems,
    style_g,
)
from mo_align.process_group import run_group
from mo_align.rewards import get_reward_funcs


def test_styles_have_the_documented_objective_profiles(tiny_model_dir):
    """Each style scores as its docstring says (real token lengths, fixed conciseness reference of 20 tokens)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    acc, conc, clar = get_reward_funcs(
        ["accuracy", "conciseness", "clarity"],
        {"accuracy": {"mode": "reference"}, "conciseness": {"reference_length": 20}, "clarity": {"strict": True}},
    )
    p = (8, "+", 7, "+", 6, 21)
    import random

    expected = {"A": (1, 0, 1), "B": (1, 1, 0), "E": (0, 1, 0), "F": (0, 0, 0)}
    for name, (a, c, cl) in expected.items():
        text = STYLES[name][1](p, random.Random(0))
        ids = [tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
        got = (acc([""], [text], ids, answer=["21"])[0], conc([""], [text], ids)[0], clar([""], [text], ids)[0])
        assert got == (a, c, cl), (name, text, got)
    g = STYLES["G"][1](p, random.Random(1))
    assert clar([""], [g], [[0]])[0] == 1.0 and "\\boxed{" in g
    assert abs(sum(share for share, _ in STYLES.values()) - 1.0) < 1e-9
    train, held_out = split_problems()
    assert len(train) + len(held_out) == 1899 and not set(train) & set(held_out) and len(held_out) == EVAL_PROMPTS
    assert prompt_text(p) == "Compute 8 + 7 + 6."
    assert sample_completion(p, random.Random(0))[0] in STYLES


def test_regimes_are_declarative_and_valid():
    """easy = the pre-issue-15 mix (G 20 %); tradeoff = the 6-style base mix scaled down plus a rare G."""
    import random

    assert set(REGIMES) >= {"easy", "tradeoff"}
    assert dict(REGIMES["easy"].shares) == {
        "A": 0.25,
        "B": 0.15,
        "C": 0.15,
        "D": 0.10,
        "E": 0.10,
        "F": 0.05,
        "G": 0.20,
    }
    assert STYLES.keys() == REGIMES["easy"].styles().keys() and STYLES["G"][0] == 0.20
    trade = get_regime("tradeoff")
    assert trade.shares["G"] == TRADEOFF_SHARE
    for name, share in BASE_SHARES.items():
        assert trade.shares[name] == pytest.approx(share * (1 - TRADEOFF_SHARE))
    assert "G" not in compact_regime(0.0).styles()  # a zero share never samples the style
    rng = random.Random(0)
    styles = compact_regime(0.5).styles()
    drawn = [sample_completion((8, "+", 7, "+", 6, 21), rng, compact_regime(0.5))[0] for _ in range(400)]
    assert 0.42 < drawn.count("G") / 400 < 0.58 and set(drawn) <= set(styles)
    p = (8, "+", 7, "+", 6, 21)
    assert all(style_g(p, random.Random(i), accuracy=1.0).endswith("\\boxed{21}") for i in range(50))
    assert not any(style_g(p, random.Random(i), accuracy=0.0).endswith("\\boxed{21}") for i in range(50))
    with pytest.raises(ValueError, match="sum to 1"):
        Regime({"A": 0.5, "B": 0.4})
    with pytest.raises(ValueError, match="unknown style"):
        Regime({"Z": 1.0})
    with pytest.raises(ValueError, match="compact_accuracy"):
        compact_regime(0.1, accuracy=1.5)
    with pytest.raises(ValueError, match="unknown task"):
        get_regime("hard")


def test_warm_start_cache_key_includes_the_regime():
    base = sft_key(0, 600, 64, 2e-3, REGIMES["tradeoff"])
    assert base == sft_key(0, 600, 64, 2e-3, compact_regime(TRADEOFF_SHARE))  # same mix, same warm start
    assert base != sft_key(0, 600, 64, 2e-3, REGIMES["easy"])
    assert base != sft_key(0, 600, 64, 2e-3, compact_regime(TRADEOFF_SHARE, accuracy=0.5))
    assert base != sft_key(1, 600, 64, 2e-3, REGIMES["tradeoff"])


def test_lab_cli_refuses_an_unknown_task(capsys):
    from mo_align.lab.run import main

    with pytest.raises(SystemExit):
        main(["--task", "hard"])
    assert "--task: unknown task 'hard'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--compact-share", "1.5"])
    assert "compact share must be in [0, 1)" in capsys.readouterr().err


@pytest.mark.slow
def test_lab_quick_end_to_end_and_report_cli(tmp_path):
    out = tmp_path / "lab"
    run = ["--quick", "--steps", "3", "--eval-steps", "3", "--sft-steps", "30"]  # make demo: linear vs ctwa, seed 0
    paths = ["--out", str(out), "--cache", str(tmp_path / "cache")]
    cmd = [sys.executable, "-m", "mo_align.lab", *run, *paths]
    proc = run_group(cmd, 900, capture_output=True, text=True)  # a timeout stops the lab's workers too
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "per algorithm" in proc.stdout and "ctwa" in proc.stdout and "linear" in proc.stdout
    for run in ("linear-seed0", "ctwa-seed0"):
        summary = json.loads((out / run / "mo_summary.json").read_text())
        assert [e["step"] for e in summary["eval"]] == [0, 3]
        assert set(summary["final"]) == {"accuracy", "conciseness", "clarity"}
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()
    # per-prompt evidence: the recorded (prompts, samples, K) scores reproduce the trainer's logged eval means
    import numpy as np

    for run in ("linear-seed0", "ctwa-seed0"):
        scores = json.loads((out / run / "lab_eval_scores.json").read_text())
        summary = json.loads((out / run / "mo_summary.json").read_text())
        assert [e["step"] for e in scores["evals"]] == [0, 3]
        for rec, logged in zip(scores["evals"], summary["eval"]):
            rewards = np.asarray(rec["rewards"], dtype=float)
            assert rewards.shape == (EVAL_PROMPTS, 4, 3)
            for k, name in enumerate(scores["objectives"]):
                assert np.nanmean(rewards[:, :, k]) == pytest.approx(logged["means"][name], abs=1e-6)
    evidence = json.loads((out / "interference.json").read_text())
    assert evidence["task"] == "tradeoff" and len(evidence["runs"]) == 2
    for row in evidence["runs"]:
        for ci in [*row["delta"].values(), row["scalar_delta"]]:
            assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert "seed level: Δ vs the warm start, over seeds" in proc.stdout and "Holm-adjusted over" in proc.stdout
    assert "per run: Δ = final − the warm start's baseline" in proc.stdout and "of n" not in proc.stdout
    assert evidence["seed_level"]["vs_reference"]["rows"]["ctwa"]["n"] == 1  # one seed: paired, but no interval
    # the demo's extras: CTWA's targets from the monitor, the one figure, where the report is
    assert "ctwa-seed0: CTWA's covariance targets" in proc.stdout and "CTWA's weight factors" in proc.stdout
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report: {out / 'report' / 'report.md'}" in proc.stdout

    from mo_align.cli import main

    rc = main(["report", str(out / "linear-seed0"), str(out / "ctwa-seed0"), "--out", str(tmp_path / "r2")])
    assert rc == 0
    md = (tmp_path / "r2" / "report.md").read_text()
    assert "linear-seed0" in md and "ctwa-seed0" in md and "pareto_" in md


def test_warm_start_learning_rate_schedule():
    """Warm-up (step + 1) / warm, then a cosine to 10 %: hand-computed points, and after the warm-up the same values
    as transformers' get_cosine_with_min_lr_schedule_with_warmup (which differs only in its warm-up, step / warm)."""
    import torch
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    from mo_align.lab.sft import lr_factor

    warm, steps = 4, 20
    assert [lr_factor(s, warm, steps) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, warm, steps) == 1.0  # the cosine starts at the peak
    assert lr_factor(12, warm, steps) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(π/2) = 0
    assert lr_factor(20, warm, steps) == pytest.approx(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warm, steps, min_lr_rate=0.1)
    for step in range(steps):
        theirs = opt.param_groups[0]["lr"]
        ours = lr_factor(step, warm, steps)
        if step < warm:
            assert theirs == pytest.approx(step / warm) and ours == pytest.approx((step + 1) / warm)
        else:
            assert ours == pytest.approx(theirs, rel=1e-12), step
        opt.step()
        sched.step()


def test_lab_evidence_uses_one_warm_start_baseline_and_no_per_run_verdicts(tmp_path):
    """Two seeds of linear, 64 prompts × 2 samples. Step-0 accuracy: seed 0 scores 0 everywhere, seed 1 scores 1 on
    prompts 0–31 (two draws of one warm start), so the per-prompt baseline is 1/2 on prompts 0–31, 0 elsewhere (mean
    1/4). Seed 0 ends at 1 on prompts 0–39 (Δ vs the baseline 40/64 − 1/4 = 3/8; vs its own draw it would be 5/8),
    seed 1 ends where it started (Δ +1/4, not 0). Conciseness 1 -> 0 on prompts 0–39 for both (Δ −5/8); clarity
    stays 1/2 (CI [0, 0]). Fixed scalar weights (1/2, 1/4, 1/4): Δ +1/32 and −1/32. Over the 2 seeds: accuracy's Δ
    mean 5/16, s/√2 = 1/16, t = 5 with 1 df: p = 1 − 2 atan(5)/π."""
    import math

    from mo_align.lab.run import EVAL_SCORES_FILE, format_evidence, lab_evidence

    n, s = 64, 2

    def scores(acc_start, acc_final):
        def rows(acc, conc):
            return [[[acc(i), conc(i), 0.5] for _ in range(s)] for i in range(n)]

        start, final = rows(acc_start, lambda i: 1.0), rows(acc_final, lambda i: float(i >= 40))
        evals = [{"step": 0, "rewards": start}, {"step": 50, "rewards": final}]
        return {"objectives": ["accuracy", "conciseness", "clarity"], "evals": evals}

    dirs = []
    payloads = {
        "linear-seed0": scores(lambda i: 0.0, lambda i: float(i < 40)),
        "linear-seed1": scores(lambda i: float(i < 32), lambda i: float(i < 32)),
    }
    for name, payload in payloads.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / EVAL_SCORES_FILE).write_text(json.dumps(payload))
        dirs.append(str(tmp_path / name))
    ev = lab_evidence(dirs, preference=[0.5, 0.25, 0.25], n_boot=500)
    assert ev["baseline"] == pytest.approx({"accuracy": 0.25, "conciseness": 1.0, "clarity": 0.5})
    r0, r1 = ev["runs"]
    assert r0["delta"]["accuracy"]["estimate"] == pytest.approx(3 / 8)
    assert r1["delta"]["accuracy"]["estimate"] == pytest.approx(1 / 4) and r1["start"]["accuracy"] == 0.5
    assert r0["delta"]["conciseness"]["estimate"] == pytest.approx(-5 / 8)
    assert r0["delta"]["clarity"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    assert r0["scalar_delta"]["estimate"] == pytest.approx(1 / 32) and r1["scalar_delta"]["estimate"] == pytest.approx(
        -1 / 32
    )
    assert "interfering" not in r0  # no per-run verdict
    acc = ev["seed_level"]["vs_start"]["rows"]["linear"]["cells"]["accuracy"]
    assert (acc["estimate"], acc["p"]) == pytest.approx((5 / 16, 1 - 2 * math.atan(5) / math.pi))
    assert ev["seed_level"]["vs_start"]["tests"] == 4 and ev["seed_level"]["preference"] == [0.5, 0.25, 0.25]
    hier = ev["hierarchical"]["linear"]
    assert set(hier) == {"accuracy", "conciseness", "clarity", "scalar"}
    assert hier["accuracy"]["estimate"] == pytest.approx(5 / 16) and hier["clarity"]["low"] == 0.0
    table = format_evidence(ev["runs"])
    assert "linear-seed0" in table and "Δ scalar (w = 0.5, 0.25, 0.25)" in table
    assert "no verdict" in table and "1/1" not in table and "interfer" not in table


def test_warm_start_uses_one_thread_on_a_busy_machine(monkeypatch):
    from mo_align.lab import run

    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run.os, "getloadavg", lambda: (0.4, 0.0, 0.0))
    assert run.warm_start_threads() == 2
    monkeypatch.setattr(run.os, "getloadavg", lambda: (5.8, 0.0, 0.0))
    assert run.warm_start_threads() == 1
