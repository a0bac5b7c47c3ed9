"""Gradient-space machinery: the applied gradient is exactly Σ_k α_k ∇L_k, the Gram matrix is right."""

import pytest
import torch
from trl import GRPOTrainer

from mo_align.trainer import MOGRPOTrainer
from mo_align.trainer.gram import gram_of_rows
from mo_align.weightings import WEIGHTINGS
from mo_align.weightings.dynamic import DynamicWeighting
from mo_align.weightings.gradnorm import GradNormWeighting
from mo_align.weightings.mgda import MGDAWeighting
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


def make(tiny_model_dir, tmp_path, weighting, rewards=None, **overrides):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=rewards or [reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), **overrides),
        train_dataset=tiny_dataset(16),
        weighting=weighting,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss reads it
    rows = [tiny_dataset(16)[i // 4] for i in range(8)]
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(rows)
    return trainer, batch


def grads(model):
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters() if p.requires_grad])


def per_objective_grads(trainer, batch):
    clean = {k: v for k, v in batch.items() if not k.startswith("mo_")}
    out = []
    for k in range(3):
        trainer.model.zero_grad()
        adv = batch["mo_objective_advantages"][:, k]
        GRPOTrainer._compute_loss(trainer, trainer.model, {**clean, "advantages": adv}).backward()
        out.append(grads(trainer.model))
    return torch.stack(out)


@pytest.mark.parametrize("space", ["parameters", "logprobs"])
def test_mgda_applies_the_weighted_sum_of_gradients(tiny_model_dir, tmp_path, space):
    trainer, batch = make(tiny_model_dir, tmp_path, MGDAWeighting(3), gramian_space=space)
    g = per_objective_grads(trainer, batch)  # (K, P)
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    applied = grads(trainer.model)
    alpha = trainer.weighting.weights()
    torch.testing.assert_close(applied, alpha @ g, atol=1e-6, rtol=1e-5)
    assert abs(float(alpha.sum()) - 1) < 1e-6
    if space == "parameters":  # the Gram matrix the solver saw is the one of these gradients
        local, _ = trainer.mo_gradient.local_gradients(trainer.model, _losses(trainer, batch), None, direct=False)
        torch.testing.assert_close(gram_of_rows(local), (g @ g.T).double(), atol=1e-6, rtol=1e-4)


def _losses(trainer, batch):
    clean = {k: v for k, v in batch.items() if not k.startswith("mo_")}
    adv = batch["mo_objective_advantages"]
    return [GRPOTrainer._compute_loss(trainer, trainer.model, {**clean, "advantages": adv[:, k]}) for k in range(3)]


def test_loss_is_linear_in_the_advantage_on_policy(tiny_model_dir, tmp_path):
    """Why combining losses equals combining advantages in the on-policy regime (ratio 1, no KL)."""
    trainer, batch = make(tiny_model_dir, tmp_path, MGDAWeighting(3))
    g = per_objective_grads(trainer, batch)
    alpha = torch.tensor([0.2, 0.3, 0.5])
    clean = {k: v for k, v in batch.items() if not k.startswith("mo_")}
    trainer.model.zero_grad()
    combined = batch["mo_objective_advantages"] @ alpha
    GRPOTrainer._compute_loss(trainer, trainer.model, {**clean, "advantages": combined}).backward()
    torch.testing.assert_close(grads(trainer.model), alpha @ g, atol=1e-6, rtol=1e-5)


def test_gradnorm_weights_sum_to_k_and_are_logged(tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), max_steps=3),
        train_dataset=tiny_dataset(32),
        weighting=GradNormWeighting(3),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "mo/grad_weight/reward_short" in h]
    assert len(logs) == 3
    for h in logs:
        total = sum(h[f"mo/grad_weight/{n}"] for n in ("reward_has_digit", "reward_short", "reward_vowels"))
        assert total == pytest.approx(3.0, abs=1e-4)
    assert trainer.weighting.initial_losses is not None


def test_dynamic_gets_the_batch_gram_and_learning_rate(tiny_model_dir, tmp_path):
    seen = []

    class Spy(DynamicWeighting):
        def update(self, stats):
            seen.append((stats.extras["gramian"].clone(), stats.extras["lr"]))
            return super().update(stats)

    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(
            str(tmp_path), max_steps=2, gramian_space="logprobs", learning_rate=1e-3, lr_scheduler_type="constant"
        ),
        train_dataset=tiny_dataset(32),
        weighting=Spy(3, regularization=1.0),
    )
    trainer.train()
    assert len(seen) == 2
    for gram, lr in seen:
        assert gram.shape == (3, 3) and torch.allclose(gram, gram.T)
        assert (torch.linalg.eigvalsh(gram) > -1e-9).all()  # PSD
        assert lr == pytest.approx(1e-3)
    assert not torch.equal(trainer.weighting.weights(), torch.full((3,), 1 / 3))


@pytest.mark.parametrize("gramian_params, passes", [(None, 3), (r"layers\.0\.", 4)])
def test_backward_passes_through_the_model(tiny_model_dir, tmp_path, gramian_params, passes):
    """Over every trainable parameter the K gradients of the Gram pass are applied directly (K passes); a
    parameter subset needs one more backward for the rest of the model (K + 1)."""
    trainer, batch = make(tiny_model_dir, tmp_path, MGDAWeighting(3), gramian_params=gramian_params)
    g = per_objective_grads(trainer, batch)
    fired = []
    handle = trainer.model.model.norm.register_full_backward_hook(lambda *a: fired.append(1))
    try:
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
    finally:
        handle.remove()
    assert len(fired) == passes
    torch.testing.assert_close(grads(trainer.model), trainer.weighting.weights() @ g, atol=1e-6, rtol=1e-5)


def test_non_finite_micro_batch_weights_stop_the_run(tiny_model_dir, tmp_path):
    """A gradient weighting whose α is not finite stops training naming the strategy (no silent uniform fallback)."""

    class Broken(MGDAWeighting):
        def gradient_weights(self, gram, losses):
            return torch.full((3,), float("nan")), {}

    trainer, batch = make(tiny_model_dir, tmp_path, Broken(3), gramian_space="logprobs")
    with pytest.raises(FloatingPointError, match=r"mgda: non-finite gradient weights .* solver diverged"):
        trainer.compute_loss(trainer.model, batch)


def reward_vowels_not_digits(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """Vowel fraction minus the digit indicator: an objective in conflict with ``reward_has_digit``."""
    pairs = zip(reward_vowels(prompts, completions), reward_has_digit(prompts, completions), strict=True)
    return [(v or 0.0) - d for v, d in pairs]


@pytest.mark.parametrize(("name", "space"), [("upgrad", "parameters"), ("upgrad", "logprobs"), ("imtlg", "logprobs")])
def test_torchjd_weighting_applies_the_weighted_sum_of_gradients(tiny_model_dir, tmp_path, name, space):
    """A TorchJD strategy: α is TorchJD's own weighting of the Gram matrix the trainer built, and the applied
    gradient is Σ_k α_k ∇L_k (IMTL-G: weights that need not sum to 1 or stay positive)."""
    import torchjd.aggregation as tja

    seen = []

    class Spy(WEIGHTINGS[name]):
        def gradient_weights(self, gram, losses):
            seen.append(gram.clone())
            return super().gradient_weights(gram, losses)

    rewards = [reward_has_digit, reward_vowels, reward_vowels_not_digits]  # g_1 and g_3 conflict
    trainer, batch = make(tiny_model_dir, tmp_path, Spy(3), rewards=rewards, gramian_space=space)
    g = per_objective_grads(trainer, batch)  # (K, P)
    assert float((g @ g.T).min()) < 0, "no conflicting pair: UPGrad would be the mean"
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    alpha = trainer.weighting.weights()
    torch.testing.assert_close(grads(trainer.model), alpha @ g, atol=1e-6, rtol=1e-5)
    (gram,) = seen
    oracle = {"upgrad": tja.UPGradWeighting, "imtlg": tja.IMTLGWeighting}[name]()
    assert torch.equal(alpha, oracle(gram).float())
    assert float((alpha - 1 / 3).abs().max()) > 1e-3, alpha  # not the mean: the Gram matrix mattered
    if space == "parameters":
        torch.testing.assert_close(gram, (g @ g.T).double(), atol=1e-6, rtol=1e-4)


def test_upgrad_trains_end_to_end(tiny_model_dir, tmp_path):
    """Three optimizer steps from a recipe name: parameters move, weights and TorchJD metrics are logged."""
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), weighting="upgrad", max_steps=3, gramian_space="logprobs"),
        train_dataset=tiny_dataset(32),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert moved, "no parameter moved"
    names = ("reward_has_digit", "reward_short", "reward_vowels")
    logs = [h for h in trainer.state.log_history if "mo/grad_weight/reward_short" in h]
    assert len(logs) == 3 and trainer.weighting.calls == 3
    for h in logs:
        assert all(
            f"mo/weight/{n}" in h and h[f"mo/grad_weight/{n}"] >= 1 / 3 - 1e-6 for n in names
        )  # UPGrad: α ≥ 1/K
        assert h["mo/upgrad/update_norm"] > 0 and h["mo/upgrad/below_norm_eps"] == 0.0
