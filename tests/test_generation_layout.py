"""Generation batches and optimizer steps: every weighting takes its state step at its own cadence, whatever the layout.

TRL generates every ``steps_per_generation × num_iterations`` micro-batches and steps the optimizer every
``gradient_accumulation_steps``. A weighting whose update waits for the end of the generation batch (CTWA's exact
post-update statistic, Dynamic's Gram matrix of the batch) runs it after the batch's last optimizer step, so each
generation batch must end on one. Audit of every weighting:

* refused when a batch does not end on an optimizer step: ``dynamic`` and ``ctwa`` with ``statistic: exact``;
* unaffected: the reward / advantage strategies update when the batch is scored (``linear``, ``tchebycheff``,
  ``smooth_tchebycheff``, ``lagrangian``, ``pama``, ``ctwa`` on_policy), the gradient ones on their own micro-batch
  (``mgda``, the TorchJD ones) or optimizer step (``gradnorm``), never on a generation batch's deferred statistic.

The accepted aligned layouts are checked against oracles: Dynamic's Gram matrix and weights against the one
micro-batch, one step layout of the same trajectory, CTWA's exact statistic against a full-batch recomputation from
the parameters at generation and after the batch's last optimizer step.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import WEIGHTINGS
from tests.dist_worker import OBJECTIVES, FixedCompletionsTrainer, RecordingCTWA, RecordingDynamic
from tests.helpers import tiny_config, tiny_dataset
from tests.test_full_batch_gram import _rel, _train


# (steps_per_generation, num_iterations, gradient_accumulation_steps)
MISALIGNED = [(6, 1, 4), (2, 1, 4), (3, 2, 4), (1, 1, 2)]
ALIGNED = [(4, 1, 4), (8, 1, 4), (2, 2, 4), (2, 2, 2), (1, 4, 2)]
# every weighting whose state step needs the generation batch to end on an optimizer step (independent of the code)
AFFECTED = {"dynamic", "ctwa"}
WEIGHTING_CASES = [(name, {}) for name in sorted(WEIGHTINGS)]
WEIGHTING_CASES += [("ctwa", {"statistic": "on_policy"}), ("jd:GradVac", {})]


def _config(out, weighting, kwargs, spg, iterations, accumulation, **extra):
    return tiny_config(
        str(out),
        weighting=weighting,
        weighting_kwargs=kwargs,
        steps_per_generation=spg,
        num_iterations=iterations,
        gradient_accumulation_steps=accumulation,
        **{"per_device_train_batch_size": 4, **extra},
    )


@pytest.mark.parametrize("layout", MISALIGNED)
@pytest.mark.parametrize(("weighting", "kwargs"), WEIGHTING_CASES)
def test_misaligned_layout_refused_in_the_config_for_exactly_the_affected_weightings(
    tmp_path, weighting, kwargs, layout
):
    """The config alone (no model anywhere) refuses a generation batch that does not end on an optimizer step for
    Dynamic and CTWA exact, in one line naming the fields; every other weighting accepts it."""
    spg, iterations, accumulation = layout
    affected = weighting in AFFECTED and kwargs.get("statistic", "exact") == "exact"
    if not affected:
        config = _config(tmp_path, weighting, kwargs, spg, iterations, accumulation)
        assert config.steps_per_generation == spg and config.gradient_accumulation_steps == accumulation
        return
    with pytest.raises(ValueError) as err:
        _config(tmp_path, weighting, kwargs, spg, iterations, accumulation)
    message = str(err.value)
    assert "\n" not in message and len(message) <= 300, message
    every = spg * iterations
    for part in (
        repr(weighting),
        f"({spg} x {iterations} = {every})",
        f"gradient_accumulation_steps ({accumulation})",
    ):
        assert part in message, message
    assert "steps_per_generation" in message and "num_iterations" in message
    assert ("statistic: on_policy" in message) == (weighting == "ctwa")


@pytest.mark.parametrize("layout", ALIGNED)
@pytest.mark.parametrize("weighting", sorted(AFFECTED))
def test_aligned_layouts_are_accepted(tmp_path, weighting, layout):
    config = _config(tmp_path, weighting, {}, *layout)
    assert config.steps_per_generation * config.num_iterations % config.gradient_accumulation_steps == 0


def test_an_injected_weighting_is_refused_before_the_model_is_loaded(tmp_path):
    """A weighting instance given to the trainer (the config names ``linear``) is checked before ``from_pretrained``:
    the model path does not even exist."""
    args = _config(tmp_path, "linear", {}, 6, 1, 4)
    with pytest.raises(ValueError, match=r"weighting 'dynamic' .* \(6 x 1 = 6\) .* gradient_accumulation_steps \(4\)"):
        MOGRPOTrainer(
            model=str(tmp_path / "no-such-model"),
            reward_funcs=list(OBJECTIVES),
            args=args,
            train_dataset=tiny_dataset(8),
            weighting=RecordingDynamic(3),
        )


class _Counter:
    """Counts a weighting's state steps by hook."""

    def __init__(self, weighting) -> None:
        self.calls = {"update": 0, "gradient_weights": 0}
        for hook in self.calls:
            original = getattr(weighting, hook)

            def counted(*a, _hook=hook, _original=original, **k):
                self.calls[_hook] += 1
                return _original(*a, **k)

            setattr(weighting, hook, counted)


@pytest.mark.parametrize(
    ("weighting", "kwargs", "space", "expected"),
    [
        ("ctwa", {"statistic": "on_policy"}, None, {"update": 2, "gradient_weights": 0}),  # per generation batch
        ("tchebycheff", {}, None, {"update": 2, "gradient_weights": 0}),  # update_first, per generation batch
        ("gradnorm", {}, "logprobs", {"update": 2, "gradient_weights": 3}),  # weights: per optimizer step
        ("mgda", {}, "logprobs", {"update": 2, "gradient_weights": 12}),  # α: per micro-batch
    ],
)
def test_unaffected_weightings_keep_their_cadence_when_misaligned(
    tiny_model_dir, tmp_path, weighting, kwargs, space, expected
):
    """6 micro-batches (of 2 rows) per generation batch, 4 per optimizer step, 3 steps: 2 generation batches, 12
    micro-batches. The accepted weightings step once per generation batch, optimizer step or micro-batch, as they do
    when aligned."""
    extra = {"max_steps": 3, "per_device_train_batch_size": 2, **({"gramian_space": space} if space else {})}
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=list(OBJECTIVES),
        args=_config(tmp_path, weighting, kwargs, 6, 1, 4, **extra),
        train_dataset=tiny_dataset(16),
    )
    counter = _Counter(trainer.weighting)
    trainer.train()
    assert trainer.state.global_step == 3
    assert counter.calls == expected


# ---- aligned layouts against oracles ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "oracle"),
    [
        # one optimizer step spans both passes over the batch (2 micro-batches x 2 iterations = 4 = GA)
        ({"per_device_train_batch_size": 4, "steps_per_generation": 2, "num_iterations": 2}, {}),
        # two optimizer steps per batch, one per pass; the oracle passes twice too, one micro-batch each
        (
            {"per_device_train_batch_size": 4, "steps_per_generation": 2, "num_iterations": 2,
             "gradient_accumulation_steps": 2, "max_steps": 4},
            {"num_iterations": 2, "max_steps": 4},
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("space", ["parameters", "logprobs"])
def test_dynamic_one_update_per_batch_with_the_full_batch_gram(tiny_model_dir, tmp_path, layout, oracle, space):
    """num_iterations = 2 layouts (each batch ends on an optimizer step) against the 1 micro-batch oracle of the same
    trajectory (SGD, lr 0.1: the weights move): one update per generation batch, the same Gram matrix (1e-6 relative,
    the mean gradient of the batch at π_old) and the same weights."""
    want, _ = _train(tiny_model_dir, str(tmp_path / "oracle"), "dynamic", space, 1, **oracle)
    got, micro = _train(tiny_model_dir, str(tmp_path / "layout"), "dynamic", space, 4, **layout)
    assert len(want) == len(got) == 2  # two generation batches, one update each
    assert len(micro) == 4  # the first pass over each batch only: 2 micro-batches x 2 batches
    for a, b in zip(got, want, strict=True):
        assert a["step"] == b["step"]
        assert _rel(a["gram"], b["gram"]) <= 1e-6, (a["gram"], b["gram"])
        torch.testing.assert_close(torch.tensor(a["weights"]), torch.tensor(b["weights"]), atol=1e-6, rtol=1e-6)
    assert max(abs(w - 1 / 3) for w in want[-1]["weights"]) > 1e-3  # not trivially equal


class _UpdateStepCTWA(RecordingCTWA):
    """RecordingCTWA that also notes the optimizer steps taken when ``update`` ran."""

    def update(self, stats):
        metrics = super().update(stats)
        self.records[-1]["update_step"] = self.trainer.state.global_step
        return metrics


class _StepParams(TrainerCallback):
    """The parameters after every optimizer step, by global step."""

    def __init__(self, trainer) -> None:
        self.trainer, self.after = trainer, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}


class _BatchRecorder(FixedCompletionsTrainer):
    """Keeps every training generation batch (rows in generation order) and the parameters it was sampled at."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            keep = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")
            params = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            rows = {k: out[k].detach().clone() for k in keep}
            self.batches.append({"step": self.state.global_step, "params": params, **rows})
        return out


@torch.no_grad()
def _logps(model, params, batch):
    """Per-token log π of the completions under ``params``: one plain forward over the whole batch."""
    model.load_state_dict(params)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    t = batch["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -t - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def _induced(adv, logp_new, logp_old, mask, eps):
    """arXiv 2602.06869's induced weight, ``mean`` aggregation, recomputed: w̃_i = Σ_t Â_i ρ_it 1[unclipped] / L_i."""
    rho = torch.exp((logp_new - logp_old).clamp(-20, 20))
    a = adv.view(-1, 1)
    unclipped = torch.where(a >= 0, rho <= 1 + eps, rho >= 1 - eps) & mask.bool()
    return (a * rho * unclipped).sum(1) / mask.sum(1)


@pytest.mark.parametrize(
    ("spg", "iterations", "accumulation", "steps_per_batch"),
    [(4, 1, 2, 2), (2, 2, 4, 1), (2, 2, 2, 2)],
)
def test_ctwa_exact_statistic_is_the_full_batch_recomputation(
    tiny_model_dir, tmp_path, spg, iterations, accumulation, steps_per_batch
):
    """Aligned layouts with one or two optimizer steps per generation batch (and two passes over it): one CTWA update
    per batch, after its last optimizer step, whose signal equals the induced weights recomputed on the whole batch
    from π_old (the parameters at generation) and π_new (those after the batch's last step)."""
    batches = 2
    args = _config(
        tmp_path, "linear", {}, spg, iterations, accumulation,
        per_device_train_batch_size=8 // spg, max_steps=batches * steps_per_batch, learning_rate=5e-2,
    )  # fmt: skip
    weighting = _UpdateStepCTWA(3, statistic="exact", cov_targets=0.5, lambda_lr=0.5)
    trainer = _BatchRecorder(
        model=tiny_model_dir, reward_funcs=list(OBJECTIVES), args=args, train_dataset=tiny_dataset(16),
        weighting=weighting,
    )  # fmt: skip
    trainer.batches, weighting.trainer = [], trainer
    steps = _StepParams(trainer)
    trainer.add_callback(steps)
    trainer.train()
    records = weighting.records
    assert len(trainer.batches) == len(records) == batches  # one update per generation batch
    eps = trainer.args.epsilon
    for b, (batch, record) in enumerate(zip(trainer.batches, records, strict=True)):
        last = (b + 1) * steps_per_batch
        assert batch["step"] == b * steps_per_batch and record["update_step"] == last  # updated after the last step
        old = _logps(trainer.model, batch["params"], batch)
        new = _logps(trainer.model, steps.after[last], batch)
        mask = batch["completion_mask"]
        want = _induced(batch["advantages"].float(), new, old, mask, eps)
        got = torch.tensor(record["signal"], dtype=torch.float32)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        assert (want - batch["advantages"]).abs().max() > 1e-3  # the policy moved: ρ ≠ 1
        if steps_per_batch > 1:  # after the batch's first step only: measurably another statistic
            early = _induced(
                batch["advantages"].float(), _logps(trainer.model, steps.after[last - 1], batch), old, mask, eps
            )
            assert (early - want).abs().max() > 1e-3
