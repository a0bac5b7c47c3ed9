"""Fidelity under micro-batching: the Gram matrix a strategy reads is the full batch's, whatever the layout.

The same generation batch (fixed completions, tests/dist_worker.py) is trained as 1 micro-batch and as B = 2 and 4
micro-batches of one optimizer step (``gradient_accumulation_steps = steps_per_generation = B``). Dynamic (one Gram
matrix per generation batch) and GradNorm (one per optimizer step) must see the same Gram matrix — the Gram matrix of
the full-batch gradients, ⟨Σ_b g_b^i, Σ_b g_b^j⟩ — and so take the same weights, in both Gram spaces. The 2-rank
DDP version is in tests/test_distributed.py (``test_full_batch_gram_two_ranks``).

The layout with B = 1 is the oracle: one backward over the whole batch, no accumulation involved.
"""

from __future__ import annotations

import pytest
import torch

from mo_align.trainer.gram import GramAccumulator, gram_of_rows
from tests.dist_worker import OBJECTIVES, FixedCompletionsTrainer, RecordingDynamic, RecordingGradNorm
from tests.helpers import tiny_config, tiny_dataset


BATCH, STEPS = 8, 2
REL = 1e-6


def _train(tiny_model_dir: str, out: str, kind: str, space: str, micro_batches: int, **overrides):
    weighting = RecordingDynamic(3) if kind == "dynamic" else RecordingGradNorm(3)
    config = {
        "max_steps": STEPS,
        "per_device_train_batch_size": BATCH // micro_batches,
        "gradient_accumulation_steps": micro_batches,
        "steps_per_generation": micro_batches,
        "num_generations": 4,
        "loss_type": "dapo",
        "optim": "sgd",
        "learning_rate": 0.1,
        "lr_scheduler_type": "constant",
        "gramian_space": space,
    }
    args = tiny_config(out, **{**config, **overrides})
    trainer = FixedCompletionsTrainer(
        model=tiny_model_dir,
        reward_funcs=list(OBJECTIVES),
        args=args,
        train_dataset=tiny_dataset(16),
        weighting=weighting,
    )
    micro_grams: list[torch.Tensor] = []  # what the old rule summed: each micro-batch's own Gram matrix
    add = trainer.mo_gradient.acc.add

    def spy(local, losses):
        micro_grams.append(gram_of_rows(local.detach().float() if space == "parameters" else local.detach()))
        add(local, losses)

    trainer.mo_gradient.acc.add = spy
    trainer.train()
    return trainer.weighting.records, micro_grams


def _rel(a, b) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


@pytest.fixture(scope="module")
def layouts(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("full_batch_gram")
    runs = {}
    for kind in ("dynamic", "gradnorm"):
        for space in ("parameters", "logprobs"):
            for b in (1, 2, 4):
                runs[kind, space, b] = _train(tiny_model_dir, str(root / f"{kind}-{space}-{b}"), kind, space, b)
    return runs


@pytest.mark.parametrize("space", ["parameters", "logprobs"])
@pytest.mark.parametrize("kind", ["dynamic", "gradnorm"])
def test_full_batch_gram_is_independent_of_micro_batching(layouts, kind, space):
    """1 vs 2 vs 4 micro-batches: the same Gram matrix (1e-6 relative) at every update, the same weights."""
    oracle, _ = layouts[kind, space, 1]
    assert len(oracle) == STEPS  # one Gram matrix per generation batch (Dynamic) / optimizer step (GradNorm)
    for b in (2, 4):
        records, micro = layouts[kind, space, b]
        assert len(records) == STEPS and len(micro) == STEPS * b  # every micro-batch accumulated, once
        for step, (got, want) in enumerate(zip(records, oracle, strict=True)):
            assert _rel(got["gram"], want["gram"]) <= REL, (kind, space, b, step, got["gram"], want["gram"])
            key = "weights" if kind == "dynamic" else "w_after"
            torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]), atol=1e-6, rtol=1e-6)
            if kind == "gradnorm":  # the step's loss is the sum of its micro-batches' (scaled) losses
                got_l, want_l = torch.tensor(got["losses"]), torch.tensor(want["losses"])
                torch.testing.assert_close(got_l, want_l, atol=1e-7, rtol=1e-6)
    # not trivially equal: the weights moved away from their start
    key = "weights" if kind == "dynamic" else "w_after"
    start = [1 / 3] * 3 if kind == "dynamic" else [1.0] * 3
    assert max(abs(x - y) for x, y in zip(oracle[-1][key], start, strict=True)) > 1e-3


def test_full_batch_gram_parameters_is_not_the_sum_of_micro_batch_grams(layouts):
    """Parameter space: the rule the trainer used before (Σ_b Gram_b) differs measurably from the full-batch Gram at
    B = 4 — the accumulation is what makes the test above pass."""
    oracle, _ = layouts["dynamic", "parameters", 1]
    _, micro = layouts["dynamic", "parameters", 4]
    summed = sum(micro[:4])  # the first generation batch's four micro-batches
    assert _rel(summed.tolist(), oracle[0]["gram"]) > 1e-2


def test_full_batch_gram_logprobs_is_the_sum_of_micro_batch_grams(layouts):
    """Log-prob space: micro-batches own disjoint coordinates (their completions' tokens), so the sum of their Gram
    matrices *is* the full-batch Gram matrix, computed here without the accumulator from the recorded pieces."""
    oracle, _ = layouts["dynamic", "logprobs", 1]
    for b in (2, 4):
        _, micro = layouts["dynamic", "logprobs", b]
        assert _rel(sum(micro[:b]).tolist(), oracle[0]["gram"]) <= REL


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize("space", ["parameters", "logprobs"])
def test_full_batch_gram_of_a_batch_trained_in_several_optimizer_steps(tiny_model_dir, tmp_path, space, loss_type):
    """steps_per_generation = 2 × gradient_accumulation_steps: TRL scales each micro-batch to its own optimizer step,
    so the batch's gradients sum to 2 step means; Dynamic's Gram matrix is the batch mean's, the same as when the
    batch is one optimizer step (lr 0: both layouts take every gradient at the same parameters)."""
    common = {
        "learning_rate": 0.0,
        "per_device_train_batch_size": 4,
        "steps_per_generation": 2,
        "loss_type": loss_type,
    }
    one_step, _ = _train(tiny_model_dir, str(tmp_path / "a"), "dynamic", space, 2, **common)
    two_steps, micro = _train(
        tiny_model_dir, str(tmp_path / "b"), "dynamic", space, 2, gradient_accumulation_steps=1, max_steps=4, **common
    )
    assert len(micro) == 4 and len(two_steps) == len(one_step) == 2  # one Gram matrix per generation batch
    assert _rel(two_steps[0]["gram"], one_step[0]["gram"]) <= REL, (two_steps[0]["gram"], one_step[0]["gram"])


def test_gram_accumulator_single_process_matches_concatenation():
    """The accumulator against a direct computation: parameters = Gram of the summed rows; logprobs = Gram of the
    concatenated rows."""

    class One:
        num_processes = 1

        @staticmethod
        def reduce(t, reduction):
            return t

    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(3, 50, generator=g) for _ in range(4)]
    acc = GramAccumulator("parameters")
    for p in parts:
        acc.add(p, torch.ones(3))
    gram, losses = acc.result(One())
    total = sum(parts).double()
    torch.testing.assert_close(gram, total @ total.T)
    torch.testing.assert_close(losses, torch.full((3,), 4.0, dtype=torch.float64))
    assert len(acc) == 0  # reset after the result
    acc = GramAccumulator("logprobs")
    for p in parts:
        acc.add(p, torch.zeros(3))
    cat = torch.cat(parts, dim=1).double()
    torch.testing.assert_close(acc.result(One())[0], cat @ cat.T)
    acc.add(parts[0], torch.ones(3))
    gram, losses = acc.result(One(), scale=0.5)  # a batch trained in 2 optimizer steps: the mean of the 2 step sums
    torch.testing.assert_close(gram, 0.25 * parts[0].double() @ parts[0].double().T)
    torch.testing.assert_close(losses, torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="before any micro-batch"):
        acc.result(One())
