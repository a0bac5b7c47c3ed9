"""Smooth Tchebycheff: hand-computed OMD steps, weights on the simplex, NaN handling, resume, bad kwargs."""

import copy
import io
import math

import pytest
import torch

from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import ObjectiveStats, get_weighting
from mo_align.weightings.smooth_tchebycheff import SmoothTchebycheffWeighting
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


NAN = float("nan")


def stats(rows, group_size=2, estimator="grpo", scale="none", names=("a", "b")):
    r = torch.tensor(rows, dtype=torch.float32)
    return ObjectiveStats(
        rewards=r,
        group_size=group_size,
        lengths=torch.ones(r.shape[0]),
        estimator=estimator,
        scale_rewards=scale,
        objective_names=names,
    )


def train_step(w, st):
    """What the trainer does on a training batch (not update_first: combine with the current w, then update)."""
    assert not type(w).update_first
    weights = w.weights()
    adv = w.combine(st)
    return weights, adv, w.update(st)


def random_stats(seed, n=8, k=3, group_size=4, estimator="grpo"):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 2, (n, k), generator=g).float()
    r[:, 1] = torch.rand(n, generator=g)
    return ObjectiveStats(
        rewards=r, group_size=group_size, lengths=torch.randint(1, 30, (n,), generator=g).float(), estimator=estimator
    )


def test_two_steps_by_hand():
    w = SmoothTchebycheffWeighting(2)  # uniform p = [0.5, 0.5], ℓ0 = log 0.5, omd_lr 0.3, T = 1
    # step 1: scored with w0 = [0.5, 0.5]: s = [0.5, 0, 1, 0]; groups (0.5, 0) and (1, 0), scale none:
    # A = s - group mean = [0.25, -0.25, 0.5, -0.5]
    st1 = stats([[1, 0], [0, 0], [1, 1], [0, 0]])
    weights, adv, m = train_step(w, st1)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(adv, torch.tensor([0.25, -0.25, 0.5, -0.5]))
    # update: z = [1, 1]; R̄ = [0.5, 0.25]; deficit p(z - R̄) = [0.25, 0.375]; ℓ1 = log 0.5 + 0.3 [0.25, 0.375]
    assert m["ideal/a"] == 1.0 and m["objective/b"] == 0.25
    assert m["deficit/a"] == pytest.approx(0.25) and m["deficit/b"] == pytest.approx(0.375)
    # w1 = softmax(ℓ1): w1_a = 1 / (1 + exp(0.3 * 0.125)) = 1 / (1 + e^0.0375)
    w1a = 1 / (1 + math.exp(0.0375))
    torch.testing.assert_close(w.weights(), torch.tensor([w1a, 1 - w1a]))
    # step 2: scored with w1: s = [1, w1a, 1 - w1a, 1]; R̄ = [0.75, 0.75], equal deficits 0.125 -> w unchanged
    st2 = stats([[1, 1], [1, 0], [0, 1], [1, 1]])
    weights, adv, m = train_step(w, st2)
    torch.testing.assert_close(weights, torch.tensor([w1a, 1 - w1a]))
    # A = s - group mean: group 1 (1, w1a) -> ±(1 - w1a)/2; group 2 (1 - w1a, 1) -> ∓w1a/2
    torch.testing.assert_close(adv, torch.tensor([(1 - w1a) / 2, -(1 - w1a) / 2, -w1a / 2, w1a / 2]))
    torch.testing.assert_close(w.weights(), torch.tensor([w1a, 1 - w1a]))
    logits = w.state_dict()["logits"]  # ℓ2 = log 0.5 + 0.3 [0.25 + 0.125, 0.375 + 0.125]
    torch.testing.assert_close(logits, math.log(0.5) + 0.3 * torch.tensor([0.375, 0.5], dtype=torch.float64))


def test_preference_and_temperature():
    # p = [3, 1] -> [0.75, 0.25]; ℓ0 = log p; T = 1 gives w0 = p
    torch.testing.assert_close(
        SmoothTchebycheffWeighting(2, preference=[3.0, 1.0]).weights(), torch.tensor([0.75, 0.25])
    )
    # T = 2: softmax(log p / 2) = sqrt(p) / Σ sqrt(p) = [0.8660, 0.5] / 1.3660
    w = SmoothTchebycheffWeighting(2, preference=[3.0, 1.0], temperature=2.0)
    root = torch.tensor([math.sqrt(0.75), 0.5])
    torch.testing.assert_close(w.weights(), root / root.sum())
    # one step with the deficit scaled by p: r = [[0, 0], [1, 1]] -> z = [1, 1], R̄ = [0.5, 0.5],
    # deficit = [0.75 * 0.5, 0.25 * 0.5]; omd_lr 1: ℓ = log p + [0.375, 0.125]
    w = SmoothTchebycheffWeighting(2, preference=[3.0, 1.0], omd_lr=1.0)
    w.update(stats([[0, 0], [1, 1]]))
    expected = torch.log(torch.tensor([0.75, 0.25], dtype=torch.float64)) + torch.tensor([0.375, 0.125]).double()
    torch.testing.assert_close(w.state_dict()["logits"], expected)


def test_zero_preference_keeps_an_objective_off():
    w = SmoothTchebycheffWeighting(2, preference=[1.0, 0.0])
    for seed in range(5):
        w.update(random_stats(seed, k=2))
    assert w.weights()[1] < 1e-7  # ℓ_b = log 1e-8 and its OMD step is scaled by p_b = 0


def test_weights_stay_on_the_simplex_and_the_running_max_is_monotone():
    w = SmoothTchebycheffWeighting(3, omd_lr=5.0, temperature=0.1)
    prev = torch.full((3,), -math.inf, dtype=torch.float64)
    for seed in range(30):
        st = random_stats(seed)
        w.update(st)
        weights = w.weights()
        assert torch.isfinite(weights).all() and (weights >= 0).all()
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
        z = w.state_dict()["running_max"]
        assert (z >= prev).all() and (z >= st.rewards.amax(dim=0).double()).all()
        prev = z


def test_evaluation_does_not_move_the_state():
    w = SmoothTchebycheffWeighting(2)
    train_step(w, stats([[1, 0], [0, 0], [1, 1], [0, 0]]))
    before = copy.deepcopy(w.state_dict())
    ev = stats([[5, 5], [0, 0]])
    w.combine(ev), w.scalarize(ev.rewards), w.weights()
    after = w.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_degenerate_batches(estimator):
    w = SmoothTchebycheffWeighting(2)
    # all rewards equal (so every group has zero variance): z = R̄ = 1, no deficit, ℓ unchanged, advantages 0
    before = w.state_dict()["logits"].clone()
    _, adv, m = train_step(w, stats([[1, 1]] * 4, estimator=estimator, scale="group"))
    assert torch.equal(adv, torch.zeros(4)) and torch.equal(w.state_dict()["logits"], before)
    assert m["deficit/a"] == 0.0
    # one group only, and G = 1
    _, adv, _ = train_step(w, stats([[1, 0], [0, 1]], estimator=estimator, scale="group"))
    assert torch.isfinite(adv).all()
    _, adv, _ = train_step(w, stats([[1, 0], [0, 1]], group_size=1, estimator=estimator, scale="group"))
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_nan_rewards(estimator):
    w = SmoothTchebycheffWeighting(3)
    rows = [[1, NAN, 0], [0, NAN, 1], [NAN, NAN, NAN], [1, NAN, 1]]
    st = stats(rows, estimator=estimator, scale="group", names=("a", "b", "c"))
    logits = w.state_dict()["logits"].clone()
    _, adv, m = train_step(w, st)
    assert torch.isfinite(adv).all() and adv[2] == 0.0
    # objective b has no data: no deficit, its logit is unchanged, its ideal point still unobserved
    assert m["deficit/b"] == 0.0 and w.state_dict()["logits"][1] == logits[1]
    assert m["ideal/b"] == -math.inf
    assert torch.isfinite(w.weights()).all()


def test_permutation_equivariance():
    perm = [2, 0, 1]
    a = SmoothTchebycheffWeighting(3, preference=[0.2, 0.3, 0.5])
    b = SmoothTchebycheffWeighting(3, preference=[0.5, 0.2, 0.3])
    for seed in range(3):
        st = random_stats(seed, estimator="gdpo")
        pst = ObjectiveStats(rewards=st.rewards[:, perm], group_size=4, lengths=st.lengths, estimator="gdpo")
        wa, adv_a, _ = train_step(a, st)
        wb, adv_b, _ = train_step(b, pst)
        torch.testing.assert_close(wb, wa[perm])
        torch.testing.assert_close(adv_b, adv_a)


def test_resume_mid_sequence_matches_uninterrupted():
    batches = [random_stats(seed, estimator="reinforce_pp") for seed in range(6)]
    full = SmoothTchebycheffWeighting(3, preference=[1.0, 2.0, 3.0])
    expected = [train_step(full, st) for st in batches]
    first = SmoothTchebycheffWeighting(3, preference=[1.0, 2.0, 3.0])
    got = [train_step(first, st) for st in batches[:2]]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = SmoothTchebycheffWeighting(3, preference=[1.0, 2.0, 3.0])
    resumed.load_state_dict(torch.load(buf))
    got += [train_step(resumed, st) for st in batches[2:]]
    for (w_e, adv_e, m_e), (w_g, adv_g, m_g) in zip(expected, got, strict=True):
        assert torch.equal(w_e, w_g) and torch.equal(adv_e, adv_g) and m_e == m_g


def test_bad_kwargs_name_the_field():
    with pytest.raises(ValueError, match="preference has 2 entries but there are 3 objectives"):
        get_weighting("smooth_tchebycheff", 3, preference=[0.5, 0.5])
    with pytest.raises(ValueError, match="preference must be finite, non-negative"):
        get_weighting("smooth_tchebycheff", 2, preference=[1.0, -1.0])
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        get_weighting("smooth_tchebycheff", 2, temperature=0.0)
    with pytest.raises(ValueError, match="omd_lr must be finite and >= 0"):
        get_weighting("smooth_tchebycheff", 2, omd_lr=-0.1)
    with pytest.raises(TypeError, match="kwarg 'omd_lr' must be"):
        get_weighting("smooth_tchebycheff", 2, omd_lr="fast")
    assert repr(SmoothTchebycheffWeighting(2)) == (
        "SmoothTchebycheffWeighting(preference=None, omd_lr=0.3, temperature=1.0)"
    )


def test_trainer_scores_with_the_weights_before_the_update(tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), max_steps=3, weighting="smooth_tchebycheff", weighting_kwargs={"omd_lr": 2.0}),
        train_dataset=tiny_dataset(32),
    )
    seen = []
    gen = trainer._generate_and_score_completions

    def spy(inputs):
        out = gen(inputs)
        seen.append((trainer.mo_rewards.clone(), out["advantages"].clone()))
        return out

    trainer._generate_and_score_completions = spy
    trainer.train()
    replay = SmoothTchebycheffWeighting(3, omd_lr=2.0)
    for r, adv in seen:  # the trainer's order: combine with the current weights, then update
        st = ObjectiveStats(rewards=r, group_size=4, lengths=torch.ones(len(r)), scale_rewards="group")
        torch.testing.assert_close(train_step(replay, st)[1], adv)
    torch.testing.assert_close(trainer.weighting.weights(), replay.weights())
    logged = [h for h in trainer.state.log_history if "mo/smooth_tchebycheff/deficit/reward_short" in h]
    assert len(logged) == 3
