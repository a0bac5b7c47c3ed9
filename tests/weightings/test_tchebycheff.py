"""Tchebycheff: hand-computed scores and advantages, the running ideal point, NaN handling, resume, bad kwargs."""

import copy
import io
import math

import pytest
import torch

from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import ObjectiveStats, get_weighting
from mo_align.weightings.tchebycheff import TchebycheffWeighting, nan_column_max, tchebycheff_scores
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


NAN = float("nan")
NAMES = ("a", "b")


def stats(rows, group_size=2, estimator="grpo", scale="none", lengths=None, names=NAMES):
    r = torch.tensor(rows, dtype=torch.float32)
    L = torch.ones(r.shape[0]) if lengths is None else torch.tensor(lengths, dtype=torch.float32)
    return ObjectiveStats(
        rewards=r, group_size=group_size, lengths=L, estimator=estimator, scale_rewards=scale, objective_names=names
    )


def train_step(w, st):
    """What the trainer does on a training batch (update_first: update, then combine)."""
    assert type(w).update_first
    metrics = w.update(st)
    return w.combine(st), metrics


def random_stats(seed, n=8, k=3, group_size=4, estimator="grpo"):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, k, generator=g) * 2 - 0.5
    L = torch.randint(1, 30, (n,), generator=g).float()
    return ObjectiveStats(rewards=r, group_size=group_size, lengths=L, estimator=estimator)


# ---- the pure function -----------------------------------------------------------------------------------------
def test_scores_by_hand():
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [NAN, 0.2], [NAN, NAN], [1.5, 1.0]])
    s = tchebycheff_scores(r, torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]))
    # row 0: shortfalls w*(z - r) = [0.5*0, 0.5*1] -> -max = -0.5;  row 1: [0.5, 0] -> -0.5
    # row 2: [0.25, 0.25] -> -0.25;  row 3: objective a skipped, [0.5*0.8] -> -0.4;  row 4: unscorable
    # row 5: above the ideal point on a: [-0.25, 0] -> -0.0
    expected = torch.tensor([-0.5, -0.5, -0.25, -0.4, NAN, 0.0])
    torch.testing.assert_close(s, expected, equal_nan=True)


def test_scores_weights_and_per_row_ideal():
    r = torch.tensor([[0.0, 0.0], [0.2, 0.9]])
    # w = [3, 1], z = [1, 1]: row 0 shortfalls [3, 1] -> -3; row 1 [2.4, 0.1] -> -2.4
    s = tchebycheff_scores(r, torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(s, torch.tensor([-3.0, -2.4]))
    # a per-row ideal point (N, K): row 0 against [0, 2] -> [0, 2] -> -2; row 1 against [0.2, 0.9] -> 0
    s = tchebycheff_scores(r, torch.tensor([3.0, 1.0]), torch.tensor([[0.0, 2.0], [0.2, 0.9]]))
    torch.testing.assert_close(s, torch.tensor([-2.0, 0.0]), atol=1e-6, rtol=0)


def test_nan_column_max():
    r = torch.tensor([[1.0, NAN, -2.0], [3.0, NAN, -5.0]])
    assert nan_column_max(r).tolist() == [3.0, -math.inf, -2.0]


# ---- the strategy ------------------------------------------------------------------------------------------------
def test_two_training_steps_by_hand():
    w = TchebycheffWeighting(2, weights=[0.5, 0.5])
    # step 1: z = max over the batch = [0.4, 0.6] (update_first: the batch is scored against a z that includes it)
    # s = -max(0.5*[0.2, 0.0]) = -0.1 and -max(0.5*[0.0, 0.4]) = -0.2; one group, mean -0.15 -> A = [0.05, -0.05]
    adv, m = train_step(w, stats([[0.2, 0.6], [0.4, 0.2]]))
    torch.testing.assert_close(adv, torch.tensor([0.05, -0.05]))
    assert m["ideal/a"] == pytest.approx(0.4) and m["ideal/b"] == pytest.approx(0.6)
    assert m["score_mean"] == pytest.approx(-0.15)
    # step 2: z = max([0.4, 0.6], [1.0, 0.5]) = [1.0, 0.6]
    # s = -max(0.5*[0.0, 0.6]) = -0.3 and -max(0.5*[1.0, 0.1]) = -0.5; mean -0.4 -> A = [0.1, -0.1]
    adv, m = train_step(w, stats([[1.0, 0.0], [0.0, 0.5]]))
    torch.testing.assert_close(adv, torch.tensor([0.1, -0.1]))
    assert m["ideal/a"] == pytest.approx(1.0) and m["ideal/b"] == pytest.approx(0.6)
    assert torch.equal(w.state_dict()["running_max"], torch.tensor([1.0, 0.6]))


def test_evaluation_does_not_move_the_ideal_point():
    w = TchebycheffWeighting(2)
    train_step(w, stats([[0.2, 0.6], [0.4, 0.2]]))
    before = copy.deepcopy(w.state_dict())
    ev = stats([[2.0, 2.0], [0.0, 0.0]])
    s = w.scalarize(ev.rewards)
    w.combine(ev)
    assert torch.equal(w.state_dict()["running_max"], before["running_max"])
    # scored against the training z = [0.4, 0.6] (w = 1/2): row 0 exceeds it -> -max(-0.8, -0.7) = 0.7
    torch.testing.assert_close(s, torch.tensor([0.7, -0.3]))


def test_before_any_training_batch_the_ideal_point_is_the_batch_max():
    w = TchebycheffWeighting(2)
    ev = stats([[0.2, 0.6], [0.4, NAN]])
    torch.testing.assert_close(w.ideal_point(ev.rewards), torch.tensor([0.4, 0.6]))
    # only objective a observed in training: b still falls back to the scored batch's max
    w.update(stats([[0.9, NAN], [0.1, NAN]]))
    torch.testing.assert_close(w.ideal_point(ev.rewards), torch.tensor([0.9, 0.6]))


def test_running_max_is_monotone_and_never_below_the_batch():
    w = TchebycheffWeighting(3)
    prev = torch.full((3,), -math.inf)
    for seed in range(10):
        st = random_stats(seed)
        w.update(st)
        z = w.state_dict()["running_max"]
        assert (z >= prev).all() and (z >= st.rewards.amax(dim=0)).all()
        assert (w.scalarize(st.rewards) <= 1e-7).all()  # every shortfall against a z that includes the batch >= 0
        prev = z


def test_batch_max_and_fixed_ideal():
    st = stats([[0.2, 0.6], [0.4, 0.2]])
    bm = TchebycheffWeighting(2, weights=[1.0, 1.0], ideal="batch_max")
    bm.update(stats([[5.0, 5.0], [5.0, 5.0]]))  # the history does not matter
    # z = [0.4, 0.6]: s = -max(0.2, 0.0) = -0.2 and -max(0.0, 0.4) = -0.4
    torch.testing.assert_close(bm.scalarize(st.rewards), torch.tensor([-0.2, -0.4]))
    fixed = TchebycheffWeighting(2, weights=[1.0, 1.0], ideal=[1.0, 1.0])
    fixed.update(st)
    # z = [1, 1]: s = -max(0.8, 0.4) = -0.8 and -max(0.6, 0.8) = -0.8
    torch.testing.assert_close(fixed.scalarize(st.rewards), torch.tensor([-0.8, -0.8]))
    assert repr(fixed) == "TchebycheffWeighting(weights=[1.0, 1.0], ideal=[1.0, 1.0])"


def test_reinforce_pp_whitens_the_scores():
    w = TchebycheffWeighting(2, weights=[1.0, 1.0], ideal=[1.0, 1.0])
    st = stats([[1.0, 1.0], [0.0, 1.0], [1.0, 0.5], [0.5, 0.5]], estimator="reinforce_pp", lengths=[1, 3, 2, 2])
    # s = [0, -1, -0.5, -0.5]; token-weighted mean (0*1 - 1*3 - 0.5*2 - 0.5*2) / 8 = -0.625
    # var = (1*0.625^2 + 3*0.375^2 + 2*0.125^2 + 2*0.125^2) / 8 * 8/7 = 0.875 / 7 = 0.125
    expected = (torch.tensor([0.0, -1.0, -0.5, -0.5]) + 0.625) / math.sqrt(0.125 + 1e-8)
    torch.testing.assert_close(w.combine(st), expected)


def test_gdpo_tchebycheff_on_group_z_scores():
    # one group of 2, objectives a = [1, 0], b = [0, 1]: z-scores a = [c, -c], b = [-c, c] with
    # c = 0.5 / (std + 1e-4), std = sqrt(0.5) (unbiased); the group's best is [c, c].
    c = 0.5 / (math.sqrt(0.5) + 1e-4)
    st = stats([[1.0, 0.0], [0.0, 1.0]], estimator="gdpo")
    # equal weights: shortfalls [0, 2c] and [2c, 0] -> equal scores -> advantages 0
    assert torch.equal(TchebycheffWeighting(2).combine(st), torch.zeros(2))
    # w = [2, 1]: s = [-max(0, 2c), -max(4c, 0)] = [-2c, -4c]; batch z-score: mean -3c, unbiased std sqrt(2) c
    adv = TchebycheffWeighting(2, weights=[2.0, 1.0]).combine(st)
    torch.testing.assert_close(adv, torch.tensor([c, -c]) / (math.sqrt(2) * c + 1e-4))


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_degenerate_batches_give_zero_advantages(estimator):
    w = TchebycheffWeighting(2)
    same = stats([[0.5, 0.5]] * 4, estimator=estimator, scale="group")  # all-equal rewards, zero-variance groups
    assert torch.equal(train_step(w, same)[0], torch.zeros(4))
    single = stats([[1.0, 0.0], [1.0, 0.0]], estimator=estimator, scale="group")  # one group, no variance
    assert torch.equal(w.combine(single), torch.zeros(2))
    one_each = stats([[1.0, 0.0], [0.0, 1.0]], group_size=1, estimator=estimator, scale="group")  # G = 1
    assert torch.isfinite(w.combine(one_each)).all()


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_nan_rewards(estimator):
    w = TchebycheffWeighting(3)
    rows = [[1.0, NAN, 0.0], [0.0, NAN, 1.0], [NAN, NAN, NAN], [0.5, NAN, 0.5]]
    st = stats(rows, estimator=estimator, names=("a", "b", "c"), scale="group")
    adv, m = train_step(w, st)
    assert torch.isfinite(adv).all() and adv[2] == 0.0
    assert m["ideal/b"] == -math.inf  # never observed
    assert torch.isnan(w.scalarize(st.rewards)[2])


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_permutation_equivariance_every_estimator(estimator):
    perm = [2, 0, 1]
    st = random_stats(3, estimator=estimator)
    pst = ObjectiveStats(rewards=st.rewards[:, perm], group_size=4, lengths=st.lengths, estimator=estimator)
    a, b = TchebycheffWeighting(3, weights=[0.2, 0.3, 0.5]), TchebycheffWeighting(3, weights=[0.5, 0.2, 0.3])
    torch.testing.assert_close(train_step(b, pst)[0], train_step(a, st)[0])


def test_resume_mid_sequence_matches_uninterrupted():
    batches = [random_stats(seed, estimator="reinforce_pp") for seed in range(6)]
    full = TchebycheffWeighting(3)
    expected = [train_step(full, st) for st in batches]
    first = TchebycheffWeighting(3)
    got = [train_step(first, st) for st in batches[:3]]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = TchebycheffWeighting(3)
    resumed.load_state_dict(torch.load(buf))
    got += [train_step(resumed, st) for st in batches[3:]]
    for (adv_e, m_e), (adv_g, m_g) in zip(expected, got, strict=True):
        assert torch.equal(adv_e, adv_g) and m_e == m_g


def test_bad_kwargs_name_the_field():
    with pytest.raises(ValueError, match="weights has 2 entries but there are 3 objectives"):
        get_weighting("tchebycheff", 3, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        get_weighting("tchebycheff", 2, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"ideal must be .* 3 finite floats"):
        get_weighting("tchebycheff", 3, ideal=[1.0, 1.0])
    with pytest.raises(ValueError, match="ideal must be"):
        TchebycheffWeighting(2, ideal="batch")
    with pytest.raises(TypeError, match="kwarg 'ideal' must be"):
        get_weighting("tchebycheff", 2, ideal="batch")
    with pytest.raises(KeyError):
        TchebycheffWeighting(2).load_state_dict({"running_max": torch.zeros(2), "z": 1})


def test_trainer_scores_each_batch_with_the_ideal_point_that_includes_it(tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), max_steps=3, weighting="tchebycheff"),
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
    replay = TchebycheffWeighting(3)
    for r, adv in seen:  # replay the trainer's order on the captured rewards: update, then combine
        st = ObjectiveStats(rewards=r, group_size=4, lengths=torch.ones(len(r)), scale_rewards="group")
        torch.testing.assert_close(train_step(replay, st)[0], adv)
    assert torch.equal(trainer.weighting.state_dict()["running_max"], replay.state_dict()["running_max"])
    logged = [h for h in trainer.state.log_history if "mo/tchebycheff/ideal/reward_short" in h]
    assert len(logged) == 3
