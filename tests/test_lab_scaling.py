"""The lab builds every algorithm from its paper recipe and changes only the fields its scaling rule declares
(mo_align/lab/scaling.py); ``--eta matched`` scales the adaptive step sizes by paper / lab weight updates; the
committed docs/lab_protocol.md is the rule's own table."""

import dataclasses
import json
import warnings
from pathlib import Path

import pytest

from mo_align.lab import scaling
from mo_align.lab.protocol import SETTINGS_FILE
from mo_align.lab.scaling import ALGORITHMS, DERIVED, PER_RUN, lab_settings, matched_step, rules_for


ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    pass


def worker_config(algo: str, eta: str, monkeypatch, tmp_path) -> object:
    """The MOGRPOConfig the lab's worker (``train_one``) hands the trainer."""
    import mo_align.trainer
    from mo_align.lab.run import train_one

    seen = {}

    def fake_trainer(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(mo_align.trainer, "MOGRPOTrainer", fake_trainer)
    with pytest.raises(_Stop):
        train_one(algo, 3, "unused-sft", 20.0, str(tmp_path / algo), 50, 25, eta)
    return seen["args"]


def recipe_config(algo: str) -> object:
    """The recipe parsed as ``mo_align.train`` parses it (bf16 off: this CPU box refuses it, as test_recipes)."""
    from mo_align.train import parse_args

    path = ROOT / "recipes" / "qwen2.5-1.5b" / f"{scaling.recipe_name(algo)}.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_args(["--config", str(path), "--bf16", "false"])[1]


def differing_fields(ref: object, lab: object) -> set[str]:
    out = set()
    for f in dataclasses.fields(ref):
        a, b = getattr(ref, f.name), getattr(lab, f.name)
        if a == b:
            continue
        if f.name == "weighting_kwargs":
            out |= {f"weighting_kwargs.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k)}
        else:
            out.add(f.name)
    return out


@pytest.mark.parametrize("eta", ["paper", "matched"])
@pytest.mark.parametrize("algo", [*ALGORITHMS, *scaling.VARIANTS])
def test_the_worker_trains_the_recipe_except_the_declared_fields(algo, eta, monkeypatch, tmp_path):
    lab, ref = worker_config(algo, eta, monkeypatch, tmp_path), recipe_config(algo)
    declared = {r.field for r in rules_for(algo, eta)}
    diff = differing_fields(ref, lab)
    derived = {f for f in diff if f in DERIVED}
    assert all(set(DERIVED[f]) <= declared for f in derived)  # only through a declared field
    # bf16: the recipe says true (test_recipes parses it with --bf16 false on CPU); the rule turns it off.
    # disable_tqdm: transformers' default follows the process's log level (earlier tests may raise it to above
    # warning, making the default True already), so the rule may change nothing; nothing undeclared ever changes.
    assert diff - derived <= declared and lab.bf16 is False and lab.disable_tqdm is True
    assert declared - {"bf16", "disable_tqdm"} <= diff - derived
    settings = lab_settings(algo, 50, eta, output_dir=str(tmp_path / algo), seed=3, eval_steps=25)
    for rule in rules_for(algo, eta):
        if rule.lab != PER_RUN and not rule.field.startswith("weighting_kwargs."):
            assert settings[rule.field] == rule.lab, rule.field
    # what the old hard-coded table dropped: the gate, the estimator, KL, clipping, 2 optimizer steps per batch
    assert lab.advantage_estimator == ref.advantage_estimator and lab.beta == ref.beta
    assert (lab.epsilon, lab.loss_type, lab.weight_decay) == (ref.epsilon, ref.loss_type, ref.weight_decay)
    assert lab.steps_per_generation // lab.gradient_accumulation_steps == 2
    assert ref.steps_per_generation // ref.gradient_accumulation_steps == 2
    assert (lab.steps_per_generation * lab.num_iterations) % lab.gradient_accumulation_steps == 0
    assert lab.generation_batch_size == 128 and lab.generation_batch_size % lab.num_generations == 0
    assert (lab.max_steps, lab.seed, lab.mo_run_label, lab.learning_rate) == (50, 3, algo, 1e-4)
    recorded = json.loads((tmp_path / algo / SETTINGS_FILE).read_text())
    assert recorded["weighting_kwargs"] == lab.weighting_kwargs


def test_the_ctwa_gate_the_control_and_the_dynamic_layers():
    ctwa = lab_settings("ctwa", 50)
    assert ctwa["weighting_kwargs"]["obj_targets"] == [1.0, 0.95, 0.95]
    assert ctwa["advantage_estimator"] == "reinforce_pp" and ctwa["beta"] == 0.001 and ctwa["epsilon"] == 100.0
    control = lab_settings("accuracy_only", 50)
    assert control["weighting"] == "linear" and control["weighting_kwargs"] == {"weights": [1.0, 0.0, 0.0]}
    assert control["advantage_estimator"] == "grpo"  # the Linear recipe's
    dynamic = lab_settings("dynamic", 50)
    assert dynamic["gramian_params"] is None and dynamic["lr_scheduler_type"] == "polynomial"


def test_paper_budget_and_matched_step_sizes_by_hand():
    ctwa, linear = scaling.paper_recipe("ctwa"), scaling.paper_recipe("linear")
    # 16 per device × 4 accumulation × 4 GPUs = 256 per step, 2 steps per batch -> 32 prompts × 16; 300 // 32 × 90
    assert scaling.paper_budget(ctwa) == {
        "prompts_per_generation": 32,
        "completions_per_step": 256,
        "steps_per_generation": 2,
        "generation_batches": 810,
        "optimizer_steps": 1620,
    }
    assert scaling.paper_budget(linear)["generation_batches"] == 360  # 64 prompts: 300 // 64 × 90
    expected = {  # 50 lab steps = 25 generation batches
        "ctwa": ("lambda_lr", 0.05, 0.05 * 810 / 25),
        "lagrangian": ("dual_lr", 0.01, 0.01 * 810 / 25),
        "smooth_tchebycheff": ("omd_lr", 0.3, 0.3 * 810 / 25),
        "gradnorm": ("lr", 0.025, 0.025 * 1620 / 50),  # one weight step per optimizer step
        "dynamic": ("regularization", 1e-5, 1e-5 * (1e-4 * 25) / (1e-6 * 810)),  # Σ lr_t / μ matched
    }
    for algo, (kwarg, paper, matched) in expected.items():
        step = matched_step(algo, 50)
        assert (step["kwarg"], step["paper"]) == (kwarg, paper)
        assert step["matched"] == pytest.approx(matched, rel=1e-5)
        assert lab_settings(algo, 50, "matched")["weighting_kwargs"][kwarg] == step["matched"]
        assert lab_settings(algo, 50, "paper")["weighting_kwargs"][kwarg] == paper
    assert matched_step("ctwa", 50)["matched"] == pytest.approx(1.62)
    assert matched_step("ctwa", 75)["matched"] == pytest.approx(0.05 * 810 / 38, rel=1e-5)  # 38 batches, last half
    for algo in ("linear", "accuracy_only", "tchebycheff", "mgda", "upgrad", "dualproj", "cagrad", "pama"):
        assert matched_step(algo, 50) is None
        assert lab_settings(algo, 50, "matched") == lab_settings(algo, 50, "paper")


def test_missing_recipes_stop_the_lab_in_one_line(monkeypatch, tmp_path):
    from mo_align.lab import run

    assert scaling.recipe_dir() == ROOT / "recipes" / "qwen2.5-1.5b"  # the checkout next to the package
    monkeypatch.setattr(scaling, "recipe_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(scaling.LabRecipeError, match=r"nowhere/ctwa.yaml is missing") as info:
        lab_settings("ctwa", 50)
    assert "\n" not in str(info.value) and len(str(info.value)) <= 300
    with pytest.raises(SystemExit, match=r"the paper recipe .*nowhere/linear.yaml is missing"):
        run.lab_scaling(["linear", "ctwa"], 50, "paper", 25)
    with pytest.raises(scaling.LabRecipeError, match="--eta must be one of"):
        monkeypatch.undo()
        lab_settings("ctwa", 50, "fast")


def test_the_rule_is_printed_and_recorded():
    from mo_align.lab.run import lab_scaling

    said = []
    rule = lab_scaling(["linear", "ctwa", "accuracy_only"], 50, "matched", 25, said.append)
    text = "\n".join(said)
    assert said[0].startswith("lab scaling: recipes/qwen2.5-1.5b/<algorithm>.yaml")
    assert "learning_rate: 1e-06 -> 0.0001" in text and "steps_per_generation: linear 16, ctwa 8" in text
    assert "ctwa lambda_lr 1.62 (paper 0.05; matched 1.62, factor 32.4 = 810 / 25 generation batches)" in text
    assert rule["fields"]["weighting_kwargs.lambda_lr"]["lab"] == {"ctwa": 1.62}
    assert "weighting_kwargs.weights" in rule["changed"]["accuracy_only"]
    assert rule["step_sizes"]["ctwa"]["used"] == 1.62 and rule["lab_budget"]["generation_batches"] == 25
    json.dumps(rule)  # the lab writes it into lab_result.json / interference.json


def test_docs_lab_protocol_is_the_printed_table(capsys):
    from mo_align.lab.protocol import protocol_markdown
    from mo_align.lab.run import main

    main(["--print-protocol"])
    printed = capsys.readouterr().out
    assert printed == protocol_markdown()
    assert (ROOT / "docs" / "lab_protocol.md").read_text() == printed, (
        "regenerate: python -m mo_align.lab --print-protocol"
    )
    assert "| ctwa | lambda_lr | generation batch | 0.05 × 810 | 0.05 × 25 | 1.62 × 25 |" in printed
    assert "| gradnorm | lr | optimizer step | 0.025 × 1620 | 0.025 × 50 | 0.81 × 50 |" in printed
    assert "| CTWA gate obj_targets | [1, 0.95, 0.95] | as the paper |" in printed
    assert "model\\.layers\\.(1[0-9]\\|2[0-5])\\." in printed  # a regex's | escaped in its table cell


def test_a_matched_step_beyond_the_weightings_bound_is_refused_before_training():
    """4 steps = 2 generation batches: CTWA's matched η = 0.05 × 810 / 2 = 20.25 > its bound 10; the worker used to
    die on it after the warm start, now the lab stops first, in one line."""
    from mo_align.lab.run import lab_scaling

    with pytest.raises(SystemExit) as info:
        lab_scaling(["linear", "ctwa"], 4, "matched", 2)
    message = str(info.value)
    assert message.startswith("mo-align lab: ctwa: ctwa: lambda_lr must be") and "got 20.25" in message
    assert "810 paper vs 2 lab generation batch updates" in message and "\n" not in message
    lab_scaling(["linear", "ctwa"], 4, "paper", 2)  # the recipes' step sizes are in bounds
    lab_scaling(list(ALGORITHMS), 50, "matched", 25)  # make lab's 50 steps: every matched step size is


@pytest.mark.slow
def test_ctwa_trains_its_recipe_in_the_lab_layout(tiny_model_dir, tmp_path, monkeypatch):
    """The lab worker on the tiny model: CTWA's recipe (REINFORCE++, KL 0.001, clipping off, the gate, the exact
    post-update statistic) with 2 optimizer steps on each generation batch of 16 prompts × 8 completions: 4 steps,
    two batches, one weight update after each (evaluated on 8 held-out prompts to keep it short)."""
    from mo_align.lab import run
    from mo_align.lab.run import train_one

    train, held_out = run.lab_datasets()
    monkeypatch.setattr(run, "lab_datasets", lambda: (train, held_out.select(range(8))))

    out = tmp_path / "ctwa"
    train_one("ctwa", 0, tiny_model_dir, 20.0, str(out), 4, 4, "paper")
    summary = json.loads((out / "mo_summary.json").read_text())
    assert summary["advantage_estimator"] == "reinforce_pp" and [e["step"] for e in summary["eval"]] == [0, 4]
    hyper = summary["weighting_hyperparameters"]
    assert hyper["obj_targets"] == [1.0, 0.95, 0.95] and hyper["lambda_lr"] == 0.05
    state = json.loads((out / SETTINGS_FILE).read_text())
    assert (state["steps_per_generation"], state["gradient_accumulation_steps"], state["beta"]) == (2, 1, 0.001)
    assert [w["step"] for w in summary["weights"]] == [1, 3]  # one weighting step per generation batch
