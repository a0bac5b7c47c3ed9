"""Reward registry, conciseness (running-mean semantics, evaluation API, resume) and clarity (§4.2, §4.3)."""

import pickle

import pytest

from mo_align.rewards import REWARDS, completion_text, get_reward_funcs
from mo_align.rewards.clarity import clarity_score
from mo_align.rewards.common import last_boxed, safe_text
from mo_align.rewards.length import ConcisenessReward


def ids(*lengths):
    return [[7] * n for n in lengths]


# ---- registry ----------------------------------------------------------------------------------------------------
def test_registry_keys_and_names():
    assert set(REWARDS) == {"accuracy", "conciseness", "clarity"}
    funcs = get_reward_funcs(["clarity", "conciseness", "accuracy"], {"accuracy": {"mode": "reference"}})
    assert [f.__name__ for f in funcs] == ["clarity", "conciseness", "accuracy"]
    assert funcs[2].mode == "reference"
    with pytest.raises(TypeError, match="conciseness"):
        get_reward_funcs(["conciseness"], {"conciseness": {"no_such_option": 1}})
    with pytest.raises(ValueError, match="twice"):
        get_reward_funcs(["clarity", "clarity"])


def test_completion_text_and_boxes():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    with pytest.raises(TypeError):
        completion_text(3)
    assert safe_text(3) == "" and safe_text(None) == ""
    assert last_boxed("\\boxed{1} and \\boxed {\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} \\boxed{2") is None
    assert last_boxed("no box") is None and last_boxed("\\boxed x") is None


# ---- conciseness -------------------------------------------------------------------------------------------------
def call(fn, lengths, training, **kwargs):
    fn.training = training
    return fn(prompts=["p"] * len(lengths), completions=["c"] * len(lengths), completion_ids=ids(*lengths), **kwargs)


def test_conciseness_running_mean_step_by_step():
    fn = REWARDS["conciseness"]()
    assert fn.running_mean is None
    assert call(fn, [3, 100], training=False) == [1.0, 1.0]  # before any training batch: 1.0, state unchanged
    assert fn.count == 0
    # batch 1: mean of (2, 4, 6, 8) = 5, including the batch itself; "< mean" scores 1
    assert call(fn, [2, 4, 6, 8], training=True) == [1.0, 1.0, 0.0, 0.0]
    assert (fn.total_tokens, fn.count, fn.running_mean) == (20, 4, 5.0)
    # evaluation: against the training mean, not updated; a length equal to the mean scores 0
    assert call(fn, [4, 5, 6], training=False) == [1.0, 0.0, 0.0]
    assert fn.count == 4
    # batch 2: (20 + 10 + 2) / 6 = 5.333...
    assert call(fn, [10, 2], training=True) == [0.0, 1.0]
    assert fn.running_mean == pytest.approx(32 / 6)
    assert call(fn, [5, 6], training=False) == [1.0, 0.0]
    # batch 3: all long; the mean is pulled up by the batch itself before scoring: (32 + 40) / 8 = 9
    assert call(fn, [20, 20], training=True) == [0.0, 0.0]
    assert call(fn, [8, 9], training=False) == [1.0, 0.0]


def test_conciseness_state_dict_resume():
    fn = REWARDS["conciseness"]()
    call(fn, [2, 4, 6, 8], training=True)
    call(fn, [10, 2], training=True)
    state = fn.state_dict()
    assert state == {"total_tokens": 32, "count": 6, "first_batch_mean": 5.0}

    resumed = REWARDS["conciseness"]()
    resumed.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert resumed.running_mean == fn.running_mean and resumed.fixed_reference == 5.0
    assert call(resumed, [5, 6], training=False) == call(fn, [5, 6], training=False) == [1.0, 0.0]
    assert call(resumed, [1, 1], training=True) == call(fn, [1, 1], training=True) == [1.0, 1.0]
    assert resumed.state_dict() == fn.state_dict() == {"total_tokens": 34, "count": 8, "first_batch_mean": 5.0}
    # a fresh reward (what a resume without the state would give) scores differently
    assert call(REWARDS["conciseness"](), [5, 6], training=False) == [1.0, 1.0]
    # older checkpoints without the first-batch mean still load
    resumed.load_state_dict({"total_tokens": 10, "count": 2})
    assert resumed.running_mean == 5.0 and resumed.first_batch_mean is None


def test_conciseness_fixed_reference_for_evaluation():
    fn = REWARDS["conciseness"]()
    # before any training batch there is no fixed reference: None (not applicable), the reward itself is 1.0
    assert call(fn, [3], training=False) == [1.0]
    assert fn.last_reference_scores == [None]
    assert fn.reference_scores(completion_ids=ids(3)) == [None]
    call(fn, [10, 20], training=True)  # first batch: reference frozen at 15
    assert fn.fixed_reference == 15.0
    for _ in range(3):
        call(fn, [2, 2], training=True)  # the policy collapses to 2 tokens: the running mean ratchets down
    assert fn.running_mean == pytest.approx(42 / 8)
    assert call(fn, [2, 6], training=False) == [1.0, 0.0]  # vs running mean 5.25
    assert fn.last_reference_scores == [1.0, 1.0]  # vs the fixed 15
    assert fn.reference_scores(completion_ids=ids(2, 6, 15)) == [1.0, 1.0, 0.0]
    assert fn.running_mean_scores(completion_ids=ids(2, 6)) == [1.0, 0.0]
    assert fn.count == 8  # none of the evaluation calls moved the state
    fn.eval_reference_length = 4.0  # e.g. the SFT policy's sampled mean length
    assert fn.reference_scores(completion_ids=ids(3, 4)) == [1.0, 0.0]


def test_conciseness_reference_length_option():
    fn = REWARDS["conciseness"](reference_length=10)
    assert call(fn, [9, 10, 11], training=True) == [1.0, 0.0, 0.0]
    assert fn.running_mean == 10.0  # still tracked
    assert call(fn, [9, 10], training=False) == [1.0, 0.0]
    assert fn.fixed_reference == 10.0
    assert fn.running_mean_scores(completion_ids=ids(9, 10)) == [1.0, 0.0]
    with pytest.raises(ValueError, match="reference_length"):
        REWARDS["conciseness"](reference_length=0)


def test_conciseness_all_gather_hook():
    # rank 0 sees lengths (2, 4); the other rank's (30, 30) arrive through the hook
    fn = REWARDS["conciseness"]()
    fn.all_gather_lengths = lambda local: [*local, 30, 30]
    assert call(fn, [2, 4], training=True) == [1.0, 1.0]  # 2 completions scored: only the local ones
    assert (fn.total_tokens, fn.count, fn.first_batch_mean) == (66, 4, 16.5)
    calls = []
    fn.all_gather_lengths = lambda local: calls.append(local) or list(local)
    call(fn, [5], training=False)
    assert calls == []  # evaluation does not gather (and does not update)
    clone = pickle.loads(pickle.dumps(fn))
    assert clone.all_gather_lengths is None and clone.count == 4


def test_conciseness_gate_on_accuracy():
    fn = REWARDS["conciseness"](gate_on_accuracy=True, accuracy_mode="reference")
    fn.training = False
    comps = ["\\boxed{4}", "\\boxed{5}", "\\boxed{4} " + "x" * 50]
    # before any training batch: 1.0 for correct answers, 0.0 for incorrect ones (the gate comes first)
    assert fn(None, comps, ids(1, 1, 50), answer=["4"] * 3) == [1.0, 0.0, 1.0]
    fn.training = True
    assert fn(None, comps, ids(1, 1, 50), answer=["4"] * 3) == [1.0, 0.0, 0.0]  # mean 52/3
    assert fn.count == 3  # every completion counts toward the mean, correct or not
    assert fn.reference_scores(None, comps, ids(1, 1, 50), answer=["4", "4", None]) == [1.0, 0.0, None]
    with pytest.raises(ValueError, match="answer"):
        fn(None, comps, ids(1, 1, 50))


def test_conciseness_needs_completion_ids():
    with pytest.raises(ValueError, match="completion_ids"):
        REWARDS["conciseness"]()(["p"], ["c"], None)


def test_conciseness_checkpoint_resume_through_the_trainer(tiny_model_dir, tmp_path):
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset

    def build(out, max_steps):
        fn = ConcisenessReward()
        args = tiny_config(str(out), max_steps=max_steps, save_strategy="steps", save_steps=2)
        trainer = MOGRPOTrainer(
            model=tiny_model_dir,
            reward_funcs=[fn, reward_has_digit, reward_short],
            args=args,
            train_dataset=tiny_dataset(32),
        )
        return trainer, fn

    first, fn = build(tmp_path, max_steps=2)
    first.train()
    assert fn.count == 2 * 8  # two generation batches of 8 completions
    saved = fn.state_dict()

    resumed, fresh = build(tmp_path, max_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert fresh.count == saved["count"] + 8  # restored, then one more batch
    assert fresh.first_batch_mean == saved["first_batch_mean"]
    assert fresh.total_tokens > saved["total_tokens"]


# ---- clarity -----------------------------------------------------------------------------------------------------
CLARITY = [
    # (text, permissive, strict) — hand-checked against the reference code's rule
    ("We compute 2 + 3 = 5. Then 5 − 1 = 4. \\boxed{4}", 1.0, 0.0),  # " 5." and " 4." are enumerators
    ("The answer is \\boxed{5}", 0.0, 0.0),
    ("Step 1: add. Step 2: subtract. \\boxed{3}", 1.0, 0.0),
    ("Step 1: add.\nStep 2: subtract.\n\\boxed{3}", 1.0, 1.0),
    ("(a) add (b) subtract \\boxed{3}", 1.0, 0.0),
    ("1. add\n2. subtract\n\\boxed{3}", 1.0, 1.0),
    ("- add\n- subtract\n\\boxed{3}", 1.0, 1.0),
    ("x - y and a - b give \\boxed{1}", 1.0, 0.0),  # subtraction with spaces = bullets
    ("He did. She did. \\boxed{2}", 1.0, 0.0),  # roman letters
    ("First add, then subtract: \\boxed{3}", 1.0, 1.0),  # two ordinals
    ("Then \\boxed{3}", 0.0, 0.0),  # one ordinal
    ("1. add\n2. subtract\n\\boxed{}", 0.0, 0.0),  # empty box
    ("1. add\n2. subtract\n\\boxed{ }", 0.0, 0.0),
    ("1. add\n2. subtract\n\\boxed{3", 0.0, 0.0),  # unclosed box
    ("1. add\n2. subtract\n", 0.0, 0.0),  # no box
    ("so x = 12. and y = 13. \\boxed{25}", 1.0, 0.0),  # "... = 12. " counts only in the permissive mode
]


@pytest.mark.parametrize(("text", "permissive", "strict"), CLARITY)
def test_clarity_cases(text, permissive, strict):
    assert clarity_score(text) == permissive
    assert clarity_score(text, strict=True) == strict
    assert REWARDS["clarity"]()(None, [text]) == [permissive]
    assert REWARDS["clarity"](strict=True)(None, [[{"role": "assistant", "content": text}]]) == [strict]


def test_clarity_gate_on_accuracy():
    text = "1. add\n2. subtract\n\\boxed{4}"
    fn = REWARDS["clarity"](gate_on_accuracy=True, accuracy_mode="reference")
    assert fn(None, [text, text, text], answer=["4", "5", None]) == [1.0, 0.0, None]
    with pytest.raises(ValueError, match="answer"):
        fn(None, [text])
    verify_gated = REWARDS["clarity"](gate_on_accuracy=True)
    assert verify_gated(None, [text.replace("{4}", "{2^2}")], answer=["4"]) == [1.0]


def test_clarity_never_raises_on_odd_completions():
    assert REWARDS["clarity"]()(None, [None, 3, [{"role": "assistant"}]]) == [0.0, 0.0, 0.0]


def test_conciseness_says_when_an_evaluation_has_no_reference_length():
    """The step-0 evaluation (before any training batch) has no running mean to score against: the reward still
    returns 1.0 as the reference code does, and says why, so the trainer reports that evaluation as not available."""
    fn = REWARDS["conciseness"]()
    reason = "no running-mean length before the first training batch"
    assert fn.missing_reference() == reason and fn.missing_reference(fixed=True).startswith("no fixed reference")
    assert call(fn, [3, 100], training=False) == [1.0, 1.0]  # unchanged: the reference's behaviour
    call(fn, [2, 4], training=True)
    assert fn.missing_reference() is None and fn.missing_reference(fixed=True) is None
    assert REWARDS["conciseness"](reference_length=10).missing_reference() is None
    assert REWARDS["conciseness"](eval_reference_length=10).missing_reference(fixed=True) is None
