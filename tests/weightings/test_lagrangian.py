"""Lagrangian primal–dual: hand-computed dual steps and advantages, λ ≥ 0, NaN handling, resume, bad kwargs."""

import copy
import io

import pytest
import torch

from mo_align.advantages import batch_whiten
from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import ObjectiveStats, get_weighting
from mo_align.weightings.lagrangian import LagrangianWeighting, dual_step
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


NAN = float("nan")
NAMES = ("a", "b", "c")


def stats(rows, group_size=2, estimator="grpo", scale="none", lengths=None, names=NAMES):
    r = torch.tensor(rows, dtype=torch.float32)
    L = torch.ones(r.shape[0]) if lengths is None else torch.tensor(lengths, dtype=torch.float32)
    return ObjectiveStats(
        rewards=r, group_size=group_size, lengths=L, estimator=estimator, scale_rewards=scale, objective_names=names
    )


def train_step(w, st):
    """What the trainer does on a training batch (update_first: the dual step, then the advantages)."""
    assert type(w).update_first
    metrics = w.update(st)
    return w.combine(st), metrics


def random_stats(seed, n=8, k=3, group_size=4, estimator="reinforce_pp"):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 2, (n, k), generator=g).float()
    r[:, 1] = torch.rand(n, generator=g)
    L = torch.randint(1, 30, (n,), generator=g).float()
    return ObjectiveStats(rewards=r, group_size=group_size, lengths=L, estimator=estimator)


def test_dual_step_by_hand():
    lam = torch.tensor([0.0, 0.5, 0.005], dtype=torch.float64)
    means = torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64)
    # 0 + 0.1 (0.9 - 0.5) = 0.04;  0.5 + 0.1 (0.9 - 1.0) = 0.49;  0.005 - 0.01 < 0 -> projected to 0
    out = dual_step(lam, means, b, 0.1)
    torch.testing.assert_close(out, torch.tensor([0.04, 0.49, 0.0], dtype=torch.float64))
    # a constraint with no data (NaN mean) keeps its multiplier
    out = dual_step(lam, torch.tensor([NAN, 0.0, NAN], dtype=torch.float64), b, 0.1)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.59, 0.005], dtype=torch.float64))
    assert torch.equal(lam, torch.tensor([0.0, 0.5, 0.005], dtype=torch.float64))  # pure


def test_three_steps_by_hand():
    w = LagrangianWeighting(3, dual_lr=0.1)  # primary a, constraints b, c with b_k = 0.9
    rows = [[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]]
    # step 1: R̄_b = 0.5, R̄_c = 0.75 -> λ = [0.1 * 0.4, 0.1 * 0.15] = [0.04, 0.015] (before the advantages)
    # per-objective A = r - group mean (scale none): a: [.5, -.5, .5, -.5]; b: 0; c: [-.5, .5, 0, 0]
    # A = A_a + 0.04 A_b + 0.015 A_c = [0.4925, -0.4925, 0.5, -0.5]
    adv, m = train_step(w, stats(rows))
    torch.testing.assert_close(adv, torch.tensor([0.4925, -0.4925, 0.5, -0.5]))
    torch.testing.assert_close(w.weights(), torch.tensor([1.0, 0.04, 0.015]))
    assert m["lambda/b"] == pytest.approx(0.04) and m["lambda/c"] == pytest.approx(0.015)
    assert m["constraint_gap/b"] == pytest.approx(0.4) and m["constraint_gap/c"] == pytest.approx(0.15)
    # primary loss -R̄_a = -0.5; Lagrangian value -0.5 + 0.04 * 0.4 + 0.015 * 0.15 = -0.48175
    assert m["primary_loss"] == pytest.approx(-0.5) and m["lagrangian_value"] == pytest.approx(-0.48175)
    # step 2: both constraints satisfied (R̄ = 1): λ = [0.04 - 0.01, 0.015 - 0.01] = [0.03, 0.005]
    sat = [[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]
    train_step(w, stats(sat))
    torch.testing.assert_close(w.weights(), torch.tensor([1.0, 0.03, 0.005]))
    # step 3: λ = [0.02, max(0, 0.005 - 0.01)] = [0.02, 0]
    _, m = train_step(w, stats(sat))
    torch.testing.assert_close(w.weights(), torch.tensor([1.0, 0.02, 0.0]))
    assert m["lambda/c"] == 0.0 and m["constraint_gap/c"] == pytest.approx(-0.1)


def test_reinforce_pp_combines_whitened_objective_advantages():
    w = LagrangianWeighting(3, dual_lr=1.0, thresholds=[0.9, 0.5])
    rows = [[1, 0.2, 0], [0, 0.4, 1], [1, 0.0, 0], [0, 1.0, 0]]
    st = stats(rows, estimator="reinforce_pp", lengths=[3, 1, 2, 2])
    adv, _ = train_step(w, st)
    # λ = [1.0 * (0.9 - 0.4), 1.0 * (0.5 - 0.25)] = [0.5, 0.25]; A = W(r_a) + 0.5 W(r_b) + 0.25 W(r_c)
    r, L = st.rewards, st.lengths
    expected = batch_whiten(r[:, 0], L) + 0.5 * batch_whiten(r[:, 1], L) + 0.25 * batch_whiten(r[:, 2], L)
    torch.testing.assert_close(adv, expected)


def test_primary_index_and_max_lambda():
    w = LagrangianWeighting(3, primary=1, thresholds=[0.2, 0.9], dual_lr=1.0, max_lambda=0.5)
    # constraints: a (b = 0.2), c (b = 0.9); R̄_a = 0, R̄_c = 0 -> λ = [0.2, min(0.9, 0.5)] = [0.2, 0.5]
    _, m = train_step(w, stats([[0, 1, 0], [0, 0, 0]]))
    torch.testing.assert_close(w.weights(), torch.tensor([0.2, 1.0, 0.5]))
    assert set(m) == {
        "primary_loss",
        "lambda/a",
        "lambda/c",
        "constraint_gap/a",
        "constraint_gap/c",
        "lagrangian_value",
    }
    assert m["primary_loss"] == pytest.approx(-0.5)


def test_relabelling_the_objectives_with_the_primary_gives_the_same_advantages():
    # the primary is an index, so equivariance holds when it follows its objective
    perm = [2, 0, 1]  # new column 1 = old column 0 (the primary)
    a = LagrangianWeighting(3, primary=0, thresholds=[0.8, 0.6], dual_lr=0.5)
    b = LagrangianWeighting(3, primary=1, thresholds=[0.6, 0.8], dual_lr=0.5)  # constraints: old c, old b
    for seed in range(4):
        st = random_stats(seed)
        pst = ObjectiveStats(rewards=st.rewards[:, perm], group_size=4, lengths=st.lengths, estimator=st.estimator)
        adv_a, _ = train_step(a, st)
        adv_b, _ = train_step(b, pst)
        torch.testing.assert_close(adv_b, adv_a)
        torch.testing.assert_close(b.weights(), a.weights()[perm])


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_constraint_permutation_equivariance(estimator):
    perm = [0, 2, 1]
    a, b = LagrangianWeighting(3, dual_lr=0.5), LagrangianWeighting(3, dual_lr=0.5)
    for seed in range(3):
        st = random_stats(seed, estimator=estimator)
        pst = ObjectiveStats(rewards=st.rewards[:, perm], group_size=4, lengths=st.lengths, estimator=estimator)
        torch.testing.assert_close(train_step(b, pst)[0], train_step(a, st)[0])
        torch.testing.assert_close(b.weights(), a.weights()[perm])


def test_lambda_stays_non_negative_and_bounded():
    w = LagrangianWeighting(3, thresholds=0.5, dual_lr=3.0, max_lambda=2.0)
    for seed in range(30):
        train_step(w, random_stats(seed))
        lam = w.state_dict()["lambda"]
        assert (lam >= 0).all() and (lam <= 2.0).all()


def test_evaluation_does_not_move_lambda():
    w = LagrangianWeighting(3)
    train_step(w, random_stats(0))
    before = copy.deepcopy(w.state_dict())
    st = random_stats(1)
    w.combine(st), w.scalarize(st.rewards), w.weights()
    assert torch.equal(w.state_dict()["lambda"], before["lambda"])


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_degenerate_batches(estimator):
    w = LagrangianWeighting(3)
    adv, m = train_step(w, stats([[1, 1, 1]] * 4, estimator=estimator, scale="group"))  # all equal, satisfied
    assert torch.equal(adv, torch.zeros(4)) and torch.equal(w.weights(), torch.tensor([1.0, 0.0, 0.0]))
    adv, _ = train_step(w, stats([[1, 0, 0], [0, 0, 0]], estimator=estimator, scale="group"))  # one group
    assert torch.isfinite(adv).all()
    adv, _ = train_step(w, stats([[1, 0, 0], [0, 1, 1]], group_size=1, estimator=estimator, scale="group"))
    assert torch.isfinite(adv).all()
    single = LagrangianWeighting(1)  # no constraint: A = A_primary
    st = stats([[1.0], [0.0]], estimator=estimator, scale="group", names=("a",))
    adv, m = train_step(single, st)
    assert torch.equal(adv, st.objective_advantages()[:, 0]) and set(m) == {"primary_loss", "lagrangian_value"}


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_nan_rewards(estimator):
    w = LagrangianWeighting(3, dual_lr=1.0)
    rows = [[1, NAN, 0], [0, NAN, 1], [NAN, NAN, NAN], [1, NAN, 0.5]]
    adv, m = train_step(w, stats(rows, estimator=estimator, scale="group"))
    assert torch.isfinite(adv).all() and adv[2] == 0.0
    # constraint b has no data: λ_b stays 0; c: R̄_c = 0.5 -> λ_c = 0.4
    torch.testing.assert_close(w.weights(), torch.tensor([1.0, 0.0, 0.4]))
    assert m["lambda/b"] == 0.0


def test_resume_mid_sequence_matches_uninterrupted():
    batches = [random_stats(seed) for seed in range(6)]
    full = LagrangianWeighting(3, dual_lr=0.3)
    expected = [train_step(full, st) for st in batches]
    first = LagrangianWeighting(3, dual_lr=0.3)
    got = [train_step(first, st) for st in batches[:3]]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = LagrangianWeighting(3, dual_lr=0.3)
    resumed.load_state_dict(torch.load(buf))
    got += [train_step(resumed, st) for st in batches[3:]]
    for (adv_e, m_e), (adv_g, m_g) in zip(expected, got, strict=True):
        assert torch.equal(adv_e, adv_g) and m_e == m_g


def test_bad_kwargs_name_the_field():
    with pytest.raises(ValueError, match="thresholds has 3 entries but there are 2 constraints"):
        get_weighting("lagrangian", 3, thresholds=[0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match=r"primary must be an objective index in \[0, 3\)"):
        get_weighting("lagrangian", 3, primary=3)
    with pytest.raises(ValueError, match="dual_lr must be"):
        get_weighting("lagrangian", 3, dual_lr=-0.1)
    with pytest.raises(ValueError, match="max_lambda must be"):
        get_weighting("lagrangian", 3, max_lambda=-1.0)
    with pytest.raises(TypeError, match="kwarg 'primary' must be"):
        get_weighting("lagrangian", 3, primary="accuracy")
    with pytest.raises(TypeError, match="kwarg 'thresholds' must be"):
        get_weighting("lagrangian", 3, thresholds="high")
    assert repr(LagrangianWeighting(3)) == (
        "LagrangianWeighting(primary=0, thresholds=0.9, dual_lr=0.01, max_lambda=None)"
    )


def test_trainer_takes_the_dual_step_before_the_advantages(tiny_model_dir, tmp_path):
    kwargs = {"thresholds": 0.9, "dual_lr": 0.5}
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(
            str(tmp_path),
            max_steps=3,
            weighting="lagrangian",
            weighting_kwargs=kwargs,
            advantage_estimator="reinforce_pp",
        ),
        train_dataset=tiny_dataset(32),
    )
    seen = []
    gen = trainer._generate_and_score_completions

    def spy(inputs):
        out = gen(inputs)
        lengths = out["completion_mask"].sum(1).float()
        seen.append((trainer.mo_rewards.clone(), lengths, out["advantages"].clone()))
        return out

    trainer._generate_and_score_completions = spy
    trainer.train()
    replay = LagrangianWeighting(3, **kwargs)
    for r, lengths, adv in seen:
        st = ObjectiveStats(rewards=r, group_size=4, lengths=lengths, estimator="reinforce_pp")
        torch.testing.assert_close(train_step(replay, st)[0], adv)
    assert torch.equal(trainer.weighting.state_dict()["lambda"], replay.state_dict()["lambda"])
    logged = [h for h in trainer.state.log_history if "mo/lagrangian/lambda/reward_short" in h]
    assert len(logged) == 3 and all(h["mo/lagrangian/lambda/reward_short"] >= 0 for h in logged)
