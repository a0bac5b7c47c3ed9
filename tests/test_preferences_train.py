"""Preference-conditioned training end to end on the offline tiny model: a run states one drawn preference per
prompt and trains, resumes to the same draws and parameters, records how to ask the model (summary, card, push),
and ``mo-align evaluate-preferences`` measures it over a grid into a front the report reads with its hypervolume."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from mo_align.preferences import render
from mo_align.trainer import MO_STATE_FILE, MOGRPOTrainer
from mo_align.trainer.state import read_mo_state
from tests.helpers import reward_short, tiny_config, tiny_dataset


ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "Preference: short {reward_short:.2f}, digits {reward_digits:.2f}"
BLOCK = {"sampler": "dirichlet", "alpha": 1.0, "template": TEMPLATE, "placement": "system"}


class Recorder:
    """An objective (1 if the completion has a digit) that records what TRL passes it: step, preferences, prompts."""

    __name__ = "reward_digits"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, completion_ids=None, mo_preference=None, trainer_state=None, **kw):
        self.calls.append((trainer_state.global_step, [list(w) for w in mo_preference], prompts))
        return [float(any(ch.isdigit() for ch in c[0]["content"])) for c in completions]


def build(model, out, recorder, **overrides):
    args = tiny_config(str(out), preference_conditioning=dict(BLOCK), **overrides)
    return MOGRPOTrainer(model=model, reward_funcs=[reward_short, recorder], args=args, train_dataset=tiny_dataset(32))


def test_a_conditioned_run_states_one_preference_per_prompt_and_trains(tiny_model_dir, tmp_path):
    recorder = Recorder()
    trainer = build(tiny_model_dir, tmp_path, recorder, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters()), "no parameter moved"
    assert [step for step, _, _ in recorder.calls] == [0, 1]
    for _, prefs, prompts in recorder.calls:
        groups = [prefs[i : i + 4] for i in range(0, 8, 4)]  # G = 4 completions per prompt
        assert all(g == [g[0]] * 4 for g in groups), "the completions of a prompt share its preference"
        assert groups[0][0] != groups[1][0]  # Dirichlet draws: two prompts, two preferences
        for w, prompt in zip(prefs, prompts, strict=True):
            assert sum(w) == pytest.approx(1.0) and min(w) >= 0
            assert prompt[0] == {"role": "system", "content": render(TEMPLATE, ["reward_short", "reward_digits"], w)}
            assert prompt[1]["role"] == "user" and prompt[1]["content"].startswith("Compute ")
    logs = [h for h in trainer.state.log_history if "mo/preference/reward_short/mean" in h]
    assert len(logs) == 2
    for h, (_, prefs, _) in zip(logs, recorder.calls, strict=True):
        drawn = [prefs[0][0], prefs[4][0]]  # one per prompt
        assert h["mo/preference/reward_short/mean"] == pytest.approx(sum(drawn) / 2)
        assert h["mo/preference/reward_short/min"] == pytest.approx(min(drawn))
        assert "mo/scalar/mean" in h and "rewards/reward_digits/mean" in h
    record = trainer.summary()["preference_conditioning"]
    assert record["template"] == TEMPLATE and record["objectives"] == ["reward_short", "reward_digits"]
    assert record["example"]["statement"] == "Preference: short 0.50, digits 0.50"  # 1/K at evaluations


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_exact_resume_draws_the_same_preferences(tiny_model_dir, tmp_path):
    """4 steps straight == 2 steps + checkpoint + resume for 2: the preferences drawn at every step, the sampler's
    counter and the parameters."""
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 5e-2}
    straight_rec, first_rec, resumed_rec = Recorder(), Recorder(), Recorder()
    straight = build(tiny_model_dir, tmp_path / "a", straight_rec, **common)
    straight.train()
    first = build(tiny_model_dir, tmp_path / "b", first_rec, **common)
    first.add_callback(StopAt(2))
    first.train()
    ckpt = tmp_path / "b" / "checkpoint-2"
    assert read_mo_state(str(ckpt / MO_STATE_FILE))["preference_sampler"]["batches"] == 2  # weights_only load
    resumed = build(tiny_model_dir, tmp_path / "b", resumed_rec, **common)
    resumed.train(resume_from_checkpoint=str(ckpt))

    drawn = [(step, prefs) for step, prefs, _ in straight_rec.calls]
    assert [s for s, _ in drawn] == [0, 1, 2, 3]
    assert [(s, p) for s, p, _ in first_rec.calls + resumed_rec.calls] == drawn
    assert len({json.dumps(p) for _, p in drawn}) == 4  # a new draw every batch
    assert resumed.mo.conditioning.sampler.batches == straight.mo.conditioning.sampler.batches == 4
    a = dict(straight.model.named_parameters())
    b = dict(resumed.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a), "parameters differ after resume"

    other = MOGRPOTrainer(  # the checkpoint resumed with another seed of the sampler: refused, one line
        model=tiny_model_dir,
        reward_funcs=[reward_short, Recorder()],
        args=tiny_config(str(tmp_path / "c"), preference_conditioning={**BLOCK, "seed": 9}, **common),
        train_dataset=tiny_dataset(32),
    )
    with pytest.raises(ValueError, match=r"the checkpoint's preference_conditioning .* differs from this run's"):
        other.train(resume_from_checkpoint=str(ckpt))


# ---- a recipe run, its card and push, and its front over a preference grid -----------------------------------------
@pytest.fixture(scope="module")
def conditioned_run(tmp_path_factory, tiny_model_dir):
    """A finished conditioned run trained from a recipe (so it holds mo_recipe.yaml and mo_summary.json)."""
    from mo_align.train import cli as train_cli

    root = tmp_path_factory.mktemp("conditioned")
    recipe = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    recipe.update(
        model_name_or_path=tiny_model_dir,
        reward_funcs=["tests.helpers.reward_vowels", "tests.helpers.reward_short"],
        weighting_kwargs={"weights": [0.5, 0.5]},
        dataset_kwargs={"n_train": 32, "n_eval": 8, "seed": 0},
        max_steps=2,
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=8,
        max_completion_length=12,
        disable_tqdm=True,
        mo_eval_temperature=1.0,  # sampled: greedy decoding of the tiny model scores 0 on vowels (a front of HV 0)
        mo_eval_num_samples=2,
        output_dir=str(root / "run"),
        preference_conditioning={
            "sampler": "grid",
            "points_per_axis": 3,
            "template": "Answer with vowels {reward_vowels:.2f} and brevity {reward_short:.2f}.",
            "placement": "prefix",
        },
    )
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    train_cli(["--config", str(root / "recipe.yaml")])
    return root / "run"


def test_the_run_summary_card_and_push_record_how_to_ask(conditioned_run, tmp_path):
    from mo_align.hub import push_run
    from tests.test_hub import FakeHfApi

    summary = json.loads((conditioned_run / "mo_summary.json").read_text())
    record = summary["preference_conditioning"]
    assert record["template"] == "Answer with vowels {reward_vowels:.2f} and brevity {reward_short:.2f}."
    assert record["placement"] == "prefix" and record["points_per_axis"] == 3
    assert record["example"]["statement"] == "Answer with vowels 0.50 and brevity 0.50."
    api = FakeHfApi(tmp_path / "hub")
    push_run(conditioned_run, "me/conditioned", api=api)
    card = (tmp_path / "hub" / "me/conditioned" / "README.md").read_text()
    assert "## Asking for a preference" in card and "on its own line before the prompt" in card
    assert "```text\nAnswer with vowels {reward_vowels:.2f} and brevity {reward_short:.2f}.\n```" in card
    assert 'messages = [{"role": "user", "content": statement + "\\n" + question}]' in card
    pushed = json.loads((tmp_path / "hub" / "me/conditioned" / "mo_summary.json").read_text())
    assert pushed["preference_conditioning"]["template"] == record["template"]


def test_evaluate_preferences_writes_a_front_with_hypervolume_that_the_report_reads(
    conditioned_run, tmp_path, capsys, monkeypatch
):
    from mo_align.cli import main as cli
    from mo_align.runs.report import write_report
    from mo_align.runs.report.pareto import hypervolume
    from mo_align.runs.summary import load_runs
    from mo_align.trainer import evaluation

    decoded, decode = [], evaluation.decode_and_score

    def spy(trainer, rows, description="Evaluation"):
        decoded.append([(row["prompt"][0]["content"].split("\n")[0], tuple(row["mo_preference"])) for row in rows])
        return decode(trainer, rows, description)

    monkeypatch.setattr(evaluation, "decode_and_score", spy)
    out = tmp_path / "front"
    assert cli(["evaluate-preferences", str(conditioned_run), "--preferences", "grid:2", "--out", str(out)]) == 0
    assert [set(rows) for rows in decoded] == [  # all 8 eval prompts stated at each point, as the run's template says
        {("Answer with vowels 1.00 and brevity 0.00.", (1.0, 0.0))},
        {("Answer with vowels 0.50 and brevity 0.50.", (0.5, 0.5))},
        {("Answer with vowels 0.00 and brevity 1.00.", (0.0, 1.0))},
    ] and all(len(rows) == 8 for rows in decoded)
    front = json.loads((out / "preference_front.json").read_text())
    assert [p["name"] for p in front["points"]] == ["pref-w1_0", "pref-w0.5_0.5", "pref-w0_1"]
    assert front["algorithm"] == "linear-conditioned" and front["objectives"] == ["reward_vowels", "reward_short"]
    means = [[p["means"][o] for o in front["objectives"]] for p in front["points"]]
    for p in front["points"]:
        for o in front["objectives"]:
            low, high = p["ci"][o]
            assert low <= p["means"][o] <= high  # 95 % bootstrap CI over the 8 eval prompts
    assert front["reference"] == [0.0, 0.0]  # the report's default: both objectives' finals lie in [0, 1]
    assert front["hypervolume"] > 0 and front["hypervolume"] == pytest.approx(hypervolume(means, [0.0, 0.0]))
    # each point was measured with its preference stated in the prompt, as the run's summary says
    point = json.loads((out / "pref-w0.5_0.5" / "mo_summary.json").read_text())
    assert point["weighting_hyperparameters"]["preference"] == [0.5, 0.5]
    assert point["preference_conditioning"]["eval_preference"] == [0.5, 0.5]
    assert "[evaluate-preferences] 3 points" in capsys.readouterr().out

    runs = load_runs(sorted(str(p) for p in out.glob("pref-*")))
    result = write_report(runs, tmp_path / "report")
    fronts = result["fronts"]
    assert set(fronts) == {"linear-conditioned"} and len(fronts["linear-conditioned"]["points"]) == 3
    assert fronts["linear-conditioned"]["hypervolume"] == pytest.approx(front["hypervolume"])
    assert "linear-conditioned" in (tmp_path / "report" / "report.md").read_text()

    # a second call finds every point done and evaluates nothing again
    stamp = (out / "pref-w1_0" / "mo_summary.json").stat().st_mtime_ns
    assert cli(["evaluate-preferences", str(conditioned_run), "--preferences", "1,0", "--out", str(out)]) == 0
    assert (out / "pref-w1_0" / "mo_summary.json").stat().st_mtime_ns == stamp and len(decoded) == 3


def test_evaluate_preferences_refuses_an_unconditioned_run_in_one_line(tmp_path, capsys):
    from mo_align.cli import main as cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "mo_summary.json").write_text(json.dumps({"algorithm": "linear", "objectives": ["a", "b"]}))
    assert cli(["evaluate-preferences", str(run), "--preferences", "grid:2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mo-align: error: {run}: not a preference-conditioned run (its mo_summary.json has no preference_conditioning)"
    ]
