"""The trainer's multi-objective state has one typed home (``trainer.mo``), and modules get typed pieces of it."""

import re
from pathlib import Path

import pytest
import torch

from mo_align.trainer.mostate import MOState, alias
from mo_align.weightings import get_weighting


ROOT = Path(__file__).resolve().parents[1] / "mo_align"


def test_state_dict_round_trip_restores_every_piece():
    mo = MOState(get_weighting("ctwa", 2))
    mo.objective_names = ("accuracy", "conciseness")
    mo.weighting.load_state_dict({**mo.weighting.state_dict(), "ema": torch.tensor([0.25, -0.5])})
    mo.eval_start = {"accuracy": 0.5, "conciseness": 0.1, "__scalar__": 0.3}
    mo.eval_starts = {"eval_other": {"accuracy": 0.2}}
    mo.history["weights"].append({"step": 1, "weights": {"accuracy": 0.6, "conciseness": 0.4}})
    mo.eval_samples.append({"step": 0, "rewards": [[[1.0, 0.0]]]})
    saved = mo.state_dict()

    fresh = MOState(get_weighting("ctwa", 2))
    assert fresh.history == {"eval": [], "weights": [], "cov_ema": [], "train_reward": []}
    fresh.load_state_dict(saved)
    assert fresh.eval_start == mo.eval_start and fresh.eval_starts == mo.eval_starts
    assert fresh.history["weights"] == [{"step": 1, "weights": {"accuracy": 0.6, "conciseness": 0.4}}]
    assert fresh.eval_samples == [{"step": 0, "rewards": [[[1.0, 0.0]]]}]
    assert torch.equal(fresh.weighting.state_dict()["ema"], torch.tensor([0.25, -0.5]))
    assert fresh.needs == fresh.weighting.trainer_needs()


def test_a_checkpoint_of_another_weighting_is_refused_naming_both():
    saved = MOState(get_weighting("linear", 2)).state_dict()
    with pytest.raises(ValueError, match="checkpoint holds weighting 'linear', run uses 'ctwa'"):
        MOState(get_weighting("ctwa", 2)).load_state_dict(saved)


def test_the_earlier_attribute_names_read_and_write_the_state():
    class Holder:
        mo_rewards = alias("rewards")

        def __init__(self) -> None:
            self.mo = MOState(get_weighting("linear", 2))

    h = Holder()
    r = torch.ones(4, 2)
    h.mo_rewards = r
    assert h.mo.rewards is r and h.mo_rewards is r


def test_no_untyped_trainer_parameter_is_left():
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted(ROOT.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(trainer|t): Any\b", line)
    ]
    assert hits == []
