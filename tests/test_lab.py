"""The lab end to end on a minimal budget: warm start, two algorithms in parallel, report; then `mo-align report`."""

import json
import subprocess
import sys

import pytest

from mo_align.lab.task import STYLES, prompt_text, sample_completion, split_problems
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
    assert len(train) + len(held_out) == 1899 and not set(train) & set(held_out)
    assert prompt_text(p) == "Compute 8 + 7 + 6."
    assert sample_completion(p, random.Random(0))[0] in STYLES


@pytest.mark.slow
def test_lab_quick_end_to_end_and_report_cli(tmp_path):
    out = tmp_path / "lab"
    run = ["--algorithms", "linear", "ctwa", "--seeds", "0", "--steps", "3", "--eval-steps", "3", "--sft-steps", "30"]
    paths = ["--out", str(out), "--cache", str(tmp_path / "cache")]
    cmd = [sys.executable, "-m", "mo_align.lab", *run, *paths]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "per algorithm" in proc.stdout and "ctwa" in proc.stdout and "linear" in proc.stdout
    for run in ("linear-seed0", "ctwa-seed0"):
        summary = json.loads((out / run / "mo_summary.json").read_text())
        assert [e["step"] for e in summary["eval"]] == [0, 3]
        assert set(summary["final"]) == {"accuracy", "conciseness", "clarity"}
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()

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
