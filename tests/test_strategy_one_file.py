"""A strategy is one file: ``WarmupEqual`` below is defined in this module alone (no mo_align file names it), yet a
recipe trains it by its dotted path, the generic validation refuses a bad kwarg from its declared ranges, the model
card names it with its papers, and a checkpoint resumes it exactly."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import torch

import mo_align.train as train_mod
from mo_align.hub.card import paper_links, trainer_model_card
from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import REGISTRY, WEIGHTINGS, ObjectiveStats, Paper, Weighting, get_weighting
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset
from tests.test_cli import tiny_recipe
from tests.test_trainer import StopAt


PATH = f"{__name__}.WarmupEqual"
KENDALL = Paper(
    "kendall2018uncertainty",
    "Kendall and others",
    2018,
    "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics",
    "1705.07115",
)


class WarmupEqual(Weighting, key="warmup_equal"):
    """Equal weights with a warm-up: w ramps linearly from [1, 0, ..., 0] (the first objective alone) to uniform
    over ``warmup`` generation batches; state: the number of batches seen."""

    papers = (KENDALL,)
    ranges: ClassVar[dict[str, str]] = {"warmup": "[1, 1e6]"}
    permutation_equivariant = False  # the first objective is distinguished during the warm-up

    def __init__(self, num_objectives: int, *, warmup: int = 4) -> None:
        super().__init__(num_objectives)
        self.warmup, self.batches = warmup, 0

    def weights(self) -> torch.Tensor:
        t = min(self.batches / self.warmup, 1.0)
        first = torch.zeros(self.num_objectives)
        first[0] = 1.0
        return (1 - t) * first + t * torch.full((self.num_objectives,), 1.0 / self.num_objectives)

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        self.batches += 1
        return {"progress": min(self.batches / self.warmup, 1.0)}

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.batches = int(state["batches"])


def test_the_class_alone_declares_key_papers_ranges_and_flags():
    assert REGISTRY["warmup_equal"] is WarmupEqual and WarmupEqual.name == "warmup_equal"
    assert "warmup_equal" not in WEIGHTINGS  # the built-in strategies (and the recipe/make lists) stay as shipped
    assert paper_links("warmup_equal")[1] == (KENDALL.label, "https://huggingface.co/papers/1705.07115")
    w = get_weighting(PATH, 3, warmup=2)  # the dotted path a recipe gives
    assert w.weights().tolist() == [1.0, 0.0, 0.0]
    w.update(None)  # a half-way ramp: (1 - 1/2) [1, 0, 0] + 1/2 [1/3, 1/3, 1/3]
    torch.testing.assert_close(w.weights(), torch.tensor([2 / 3, 1 / 6, 1 / 6]))
    with pytest.raises(ValueError, match=r"is taken by tests\.test_strategy_one_file\.WarmupEqual$"):
        type("Other", (Weighting,), {}, key="warmup_equal")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 0}, "warmup_equal: warmup must be finite and >= 1 and <= 1e+06, got 0"),
        ({"warmup": 2.5}, "weighting 'warmup_equal' kwarg 'warmup' must be <class 'int'>, got 2.5"),
        ({"warmpu": 2}, "weighting 'warmup_equal' got an unknown kwarg 'warmpu'; valid kwargs"),
    ],
)
def test_a_bad_kwarg_is_refused_in_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch, kwargs, message):
    def fail(*a, **k):
        raise AssertionError("the model was loaded before the configuration error was reported")

    monkeypatch.setattr(MOGRPOTrainer, "__init__", fail)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, weighting=PATH, weighting_kwargs=kwargs)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mo-align: error: ") and message in err[-1] and len(err[-1]) <= 300, err[-1]


def test_a_recipe_trains_it_and_the_card_names_it(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    overrides = {"weighting": PATH, "weighting_kwargs": {"warmup": 2}, "max_steps": 2, "eval_strategy": "no"}
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval_on_start=False, **overrides)
    trainer = train_mod.main(*train_mod.parse_args(["--config", recipe, "--disable_tqdm", "true"]))
    assert isinstance(trainer.weighting, WarmupEqual) and trainer.weighting.batches == 2
    names = ("accuracy", "conciseness", "clarity")
    logged = [[h[f"mo/weight/{n}"] for n in names] for h in trainer.state.log_history if "mo/weight/accuracy" in h]
    # one generation batch per optimizer step: the weights of batches 1 and 2 (the state moves after each is scored)
    torch.testing.assert_close(torch.tensor(logged[:2]), torch.tensor([[1.0, 0.0, 0.0], [2 / 3, 1 / 6, 1 / 6]]))
    summary = json.loads((out / "mo_summary.json").read_text())
    assert summary["algorithm"] == "warmup_equal" and summary["weighting_hyperparameters"]["warmup"] == 2
    card = trainer_model_card(trainer)
    assert "warmup_equal" in card and "Uncertainty to Weigh Losses" in card and "papers/1705.07115" in card


def run(tiny_model_dir, out, resume=None, callbacks=()):
    args = tiny_config(str(out), weighting=PATH, weighting_kwargs={"warmup": 3}, max_steps=4, learning_rate=5e-2)
    args.save_strategy, args.save_steps = "steps", 2
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=args,
        train_dataset=tiny_dataset(32),
    )
    for cb in callbacks:
        trainer.add_callback(cb)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_exact_resume_through_a_checkpoint(tiny_model_dir, tmp_path):
    straight = run(tiny_model_dir, tmp_path / "a")
    run(tiny_model_dir, tmp_path / "b", callbacks=[StopAt(2)])
    resumed = run(tiny_model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-2"))
    assert isinstance(resumed.weighting, WarmupEqual)
    assert resumed.weighting.batches == straight.weighting.batches == 4  # 2 restored from the checkpoint + 2
    for (n, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n
