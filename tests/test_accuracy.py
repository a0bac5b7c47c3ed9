"""accuracy: both modes on all MATH-500 gold answers, hand-computed reference cases, equivalences, time bounds."""

import multiprocessing as mp
import os
import pathlib
import pickle
import random
import re
import threading
import time

import pyarrow.parquet as pq
import pytest

from mo_align.rewards import REWARDS
from mo_align.rewards import accuracy as accuracy_module
from mo_align.rewards.accuracy import AccuracyReward, too_complex
from mo_align.rewards.hendrycks import is_equiv, reference_extract, reference_score, strip_string
from mo_align.rewards.verify import HARD_TIMEOUT, OK, VerifyClient, get_pool


# The paper's MATH-500 split (train/val/test parquet files): MO_ALIGN_MATH500_DIR, else ../shared/data/math500 beside
# the repository (where this project's CI lays it). A copy of the project elsewhere skips the tests that read all 500
# golds, naming the path; under CI (CI=true) a missing split fails instead of skipping.
SHARED = pathlib.Path(
    os.environ.get("MO_ALIGN_MATH500_DIR")
    or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "math500"
)


def _golds() -> list[str]:
    if not SHARED.is_dir():
        message = f"missing {SHARED}: set MO_ALIGN_MATH500_DIR to a MATH-500 split (train/val/test.parquet)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = []
    for split in ("train", "val", "test"):
        out += [
            r["ground_truth"] for r in pq.read_table(SHARED / f"{split}.parquet").column("reward_model").to_pylist()
        ]
    assert len(out) == 500
    return out


@pytest.fixture(scope="module")
def golds():
    return _golds()


@pytest.fixture(scope="module")
def verify():
    acc = REWARDS["accuracy"]()
    acc.warmup()  # start the math-verify server once; time bounds below are for a running pool
    return acc


@pytest.fixture(scope="module")
def reference():
    return REWARDS["accuracy"](mode="reference")


def boxed(answer: str) -> str:
    return f"Step 1: we work it out.\nStep 2: we check it.\nSo the final answer is $\\boxed{{{answer}}}$."


def score(fn, text, gold):
    return fn(prompts=["p"], completions=[text], completion_ids=[[1]], answer=[gold])[0]


# ---- all 500 gold answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["verify", "reference"])
def test_every_boxed_gold_scores_one(golds, mode, verify, reference):
    fn = verify if mode == "verify" else reference
    texts = [boxed(g) for g in golds]
    assert fn(prompts=None, completions=texts, completion_ids=None, answer=golds) == [1.0] * 500
    conversational = [[{"role": "assistant", "content": t}] for t in texts[:50]]
    assert fn(prompts=None, completions=conversational, completion_ids=None, answer=golds[:50]) == [1.0] * 50


def _wrong_pairs(golds, n):
    """(gold, another gold) with different normalised strings and no digit-free coincidence."""
    pairs = []
    for i, gold in enumerate(golds):
        other = golds[(i * 7 + 13) % 500]
        if strip_string(gold) != strip_string(other):
            pairs.append((gold, other))
    return pairs[:n]


def test_wrong_answers_score_zero(golds, verify, reference):
    pairs = _wrong_pairs(golds, 500)
    assert len(pairs) > 450
    texts = [boxed(other) for _, other in pairs]
    answers = [gold for gold, _ in pairs]
    assert reference(None, texts, None, answer=answers) == [0.0] * len(pairs)
    assert verify(None, texts[:200], None, answer=answers[:200]) == [0.0] * 200
    # integer answers off by one, and missing / unclosed boxes
    ints = [g for g in golds if re.fullmatch(r"\d+", g)][:100]
    for fn in (verify, reference):
        assert fn(None, [boxed(str(int(g) + 1)) for g in ints], None, answer=ints) == [0.0] * len(ints)
        assert fn(None, ["The answer is 5.", "\\boxed{5", "\\fbox{5}", ""], None, answer=["5"] * 4) == [0.0] * 4


# ---- equivalent forms ------------------------------------------------------------------------------------------
# (boxed answer, gold, verify score, reference score): the reference column is hand-computed from §4.1.
EQUIVALENCES = [
    ("0.5", "\\frac{1}{2}", 1.0, 1.0),  # "0.5" -> \frac{1}{2}
    ("x=3", "3", 1.0, 1.0),  # short "k =" prefix dropped
    ("10\\%", "10", 1.0, 1.0),  # \% removed
    ("1/3", "\\frac{1}{3}", 1.0, 1.0),  # integer a/b -> \frac{a}{b}
    ("\\dfrac{3}{4}", "\\frac34", 1.0, 1.0),  # dfrac -> frac, \frac34 -> \frac{3}{4}
    ("y = 2x+1", "2x+1", 1.0, 1.0),
    ("\\frac{2}{4}", "\\frac12", 1.0, 0.0),
    ("(x+1)^2", "x^2+2x+1", 1.0, 0.0),
    ("\\{2,1\\}", "\\{1,2\\}", 1.0, 0.0),
    ("3.0", "3", 1.0, 0.0),
    ("\\frac{1}{2}\\sqrt{3}", "\\frac{\\sqrt{3}}{2}", 1.0, 0.0),
    ("\\sqrt{8}", "2\\sqrt{2}", 1.0, 0.0),
    ("0.75", "\\dfrac{3}{4}", 1.0, 0.0),
    ("-\\frac{1}{2}", "-0.5", 1.0, 0.0),
    ("\\frac{-1}{2}", "-\\frac12", 1.0, 0.0),
    ("\\pi \\cdot 2", "2\\pi", 1.0, 0.0),
    ("C", "\\text{(C)}", 1.0, 0.0),
    ("3+2i", "2i+3", 1.0, 0.0),
    ("10%", "10", 1.0, 0.0),  # a bare % is kept by the reference (only \% is removed)
    ("\\begin{pmatrix} 2/4 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1/2 \\\\ 2 \\end{pmatrix}", 1.0, 0.0),
    ("4", "5", 0.0, 0.0),
    ("\\frac{1}{3}", "0.33", 0.0, 0.0),
    ("(1,2)", "(2,1)", 0.0, 0.0),
    ("x^2", "x^3", 0.0, 0.0),
    ("-3", "3", 0.0, 0.0),
]


@pytest.mark.parametrize(("pred", "gold", "want_verify", "want_reference"), EQUIVALENCES)
def test_equivalent_forms(pred, gold, want_verify, want_reference, verify, reference):
    assert score(verify, boxed(pred), gold) == want_verify
    assert score(reference, boxed(pred), gold) == want_reference


# ---- the reference checker, hand-computed ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "gold", "want"),
    [
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{x=3}", "3", 1.0),
        ("\\boxed{10\\%}", "10", 1.0),
        ("\\boxed{\\sqrt3}", "\\sqrt{3}", 1.0),  # \sqrt3 -> \sqrt{3}
        ("\\boxed{.5}", "0.5", 1.0),  # leading "." gets a 0, then 0.5 -> \frac{1}{2}
        ("\\boxed{5\\text{ cm}}", "5", 1.0),  # unit after "\text{ " cut
        ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)", 1.0),  # \left, \right and spaces removed
        ("\\boxed{90^\\circ}", "90", 1.0),
        ("\\boxed{\\$18.90}", "18.90", 1.0),
        ("\\boxed{k = 7}", "7", 1.0),
        ("\\boxed{abc = 7}", "7", 0.0),  # left side longer than 2 characters: kept
        ("\\boxed{1,000}", "1000", 0.0),
        ("\\boxed{x/2}", "x/2", 1.0),  # non-integer a/b left alone
        ("\\boxed{4} then \\boxed{5}", "5", 1.0),  # the last box counts
        ("\\boxed{4} then \\boxed{5}", "4", 0.0),
        ("\\boxed 5$ and more", "5", 1.0),  # "\boxed " form: up to the next $
        ("\\boxed 5 \\boxed{6}", "6", 0.0),  # "\boxed " wins even before a later \boxed{...}
        ("\\fbox{5}", "5", 0.0),  # found, then rejected
        ("\\boxed{5", "5", 0.0),  # unclosed
        ("\\boxed5}", "5", 0.0),  # a } before any { never closes
        ("no box at all: 5", "5", 0.0),
        ("\\boxed{\\sqrt}", "\\sqrt", 1.0),  # normalisation fails on both: raw strings equal
        ("\\boxed{\\sqrt}", "\\sqrt ", 0.0),  # ... raw strings differ
        ("\\boxed{1\\text{ a}\\text{ b}}", "1", 0.0),  # two "\text{ ": raw comparison
    ],
)
def test_reference_mode_hand_computed(text, gold, want, reference):
    assert reference_score(text, gold) == want
    assert score(reference, text, gold) == want


def test_reference_normalisation_steps():
    assert strip_string("\\dfrac12") == "\\frac{1}{2}"
    assert strip_string("\\frac1{72}") == "\\frac{1}{72}"
    assert strip_string("x + .25") == "x+0.25"  # " ." -> " 0.", then spaces removed
    assert strip_string(" .5") == "\\frac{1}{2}"  # -> " 0.5" -> "0.5" -> \frac{1}{2} (the 0.5 rule runs last)
    assert strip_string("3/4") == "\\frac{3}{4}"
    assert strip_string("03/4") == "03/4"  # not canonical integers
    assert strip_string("\\sqrt 2") == "\\sqrt{}2"  # the next character is the space
    assert strip_string("x\\!=\\!5") == "5"
    assert is_equiv(None, None) and not is_equiv("1", None)
    assert reference_extract("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert reference_extract("\\boxed {5}$ more") == "{5}"  # the "\boxed " branch: text up to the next $
    assert reference_extract("\\fbox{5}") is None


# ---- robustness and time bounds --------------------------------------------------------------------------------
ADVERSARIAL = {
    "power tower": "\\boxed{9^{9^{9^{9^9}}}}",
    "double exponential": "\\boxed{2^{2^{30}}}",
    "huge power": "\\boxed{10^{100000000}}",
    "huge factorial": "\\boxed{99999999!}",
    "huge binomial": "\\boxed{\\binom{10^{9}}{10^{8}}}",
    "1 MB of text": "x" * 1_000_000 + "\\boxed{3}",
    "1 MB inside the box": "\\boxed{" + "1+" * 500_000 + "1}",
    "10k unbalanced braces": "\\boxed{" + "{" * 10_000,
    "10k closing braces": "\\boxed{3" + "}" * 10_000,
    "10k boxes": "\\boxed{1}" * 10_000,
    "deep fractions": "\\boxed{" + "\\frac{1}{" * 200 + "2" + "}" * 201,
    "nested fractions below the guard": "\\boxed{" + "\\frac{1}{1+" * 15 + "x" + "}" * 16,
    "nested roots": "\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 301,
    "long expression": "\\boxed{" + "+".join(f"x_{i}^{i}" for i in range(60)) + "}",
    "unicode and nul": "\\boxed{\x00\u202e٣}",
    "latex garbage": "\\boxed{\\begin{pmatrix}\\end{array}\\left(\\right]\\frac{}{}}",
}


@pytest.mark.parametrize("guards", [True, False], ids=["guards", "no-guards"])
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_completion_is_bounded(name, guards, verify, monkeypatch):
    if not guards:  # every answer reaches math-verify: only the worker time limits bound it
        monkeypatch.setattr(accuracy_module, "too_complex", lambda answer, max_chars=300: False)
    acc = AccuracyReward()  # fresh answer cache
    text = ADVERSARIAL[name]
    start = time.perf_counter()
    got = acc(None, [text], None, answer=["3"])
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{name}: {elapsed:.2f}s"
    assert got == [1.0 if name in ("1 MB of text", "10k closing braces") else 0.0]


def test_malformed_inputs_never_raise(verify, reference):
    odd = [None, 123, {"content": "x"}, [{"role": "assistant", "content": None}], ["not a message"], b"\\boxed{3}"]
    for fn in (verify, reference):
        assert fn(None, odd, None, answer=["3"] * len(odd)) == [0.0] * len(odd)
        assert fn(None, [boxed("3"), boxed("3")], None, answer=[None, 3]) == [None, 1.0]
        with pytest.raises(ValueError, match="answer"):
            fn(None, [boxed("3")], None)


def test_guards():
    assert too_complex("9^{9^{9}}") and too_complex("2^{2^{30}}") and too_complex("10^{123456}")
    assert too_complex("12345!") and too_complex("x" * 301) and too_complex("{" * 21 + "}" * 21)
    assert not too_complex("e^{x^2}") and not too_complex("2^{10}") and not too_complex("\\frac{\\sqrt{3}}{2}")


def test_hard_timeout_kills_and_replaces_the_worker():
    # Soft limit off: only the parent-side SIGKILL can end this check.
    client = VerifyClient(num_workers=1, timeout=0.5, soft_timeout=0)
    try:
        client.warmup()
        start = time.perf_counter()
        (outcome, _), (ok, value) = client.run([("3", "10^{100000000}"), ("\\frac{1}{2}", "0.5")])
        elapsed = time.perf_counter() - start
        assert outcome == HARD_TIMEOUT and (ok, value) == (OK, True)
        # 10^100000000 runs for minutes unkilled: a generous bound (0.5 s limit + a fork of the warm server + the
        # second check took ~1 s idle and 1.7 s under load) that still proves the kill, without timing the machine
        assert elapsed < 30, elapsed
        assert client.server_stats["restarts"] == 1
    finally:
        client.close()


def test_works_from_a_background_thread(verify):
    # TRL runs async reward functions on a thread, where math-verify's own signal timeouts raise.
    acc = AccuracyReward()
    got = []
    thread = threading.Thread(target=lambda: got.append(acc(None, [boxed("(x+1)^2")], None, answer=["x^2+2x+1"])))
    thread.start()
    thread.join(30)
    assert got == [[1.0]]


def test_pickle_round_trip(verify):
    acc = AccuracyReward(mode="verify", timeout=0.75)
    acc(None, [boxed("3")], None, answer=["3"])
    clone = pickle.loads(pickle.dumps(acc))
    assert (clone.mode, clone.timeout) == ("verify", 0.75)
    assert clone.stats["completions"] == 0
    assert clone(None, [boxed("0.25")], None, answer=["\\frac14"]) == [1.0]


def _score_in_child(queue):
    acc = AccuracyReward()
    scores = acc(None, [boxed("(x+1)^2"), boxed("x^3")], None, answer=["x^2+2x+1", "x^2"])
    queue.put((scores, acc.stats["verified"], get_pool(acc.num_workers, acc.timeout)._proc.pid))


def test_fork_safety(verify):
    parent_pool = get_pool(verify.num_workers, verify.timeout)
    parent_server = parent_pool._proc.pid
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_score_in_child, args=(queue,))
    child.start()
    scores, verified, child_server = queue.get(timeout=60)
    assert scores == [1.0, 0.0] and verified == 2
    assert child_server != parent_server  # the child started its own server
    child.join(30)
    assert child.exitcode == 0
    assert parent_pool._proc.pid == parent_server  # the parent's server was not touched
    assert parent_pool._proc.poll() is None
    assert score(verify, boxed("\\sqrt{8}"), "2\\sqrt{2}") == 1.0


def test_mode_validation():
    with pytest.raises(ValueError, match="mode"):
        REWARDS["accuracy"](mode="sympy")
    with pytest.raises(ValueError, match="timeout"):
        REWARDS["accuracy"](timeout=0)


# ---- throughput ------------------------------------------------------------------------------------------------
def _perturb(gold, golds, rng):
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if not digits:
        return rng.choice(golds)
    i = rng.choice(digits)
    return gold[:i] + str((int(gold[i]) + rng.randint(1, 8)) % 10) + gold[i + 1 :]


def _equivalent(gold, rng):
    m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", gold)
    if m:
        a, b = m.groups()
        return rng.choice([f"{a}/{b}", f"\\frac{{{2 * int(a)}}}{{{2 * int(b)}}}", f"\\dfrac{{{a}}}{{{b}}}"])
    if re.fullmatch(r"-?\d+", gold):
        return rng.choice([gold + ".0", f"x = {gold}"])
    return rng.choice([gold.replace(",", ", "), "x = " + gold])


def ordinary_batch(golds, seed, prompts=32, per_prompt=16):
    """A GRPO-sized batch: per prompt a few distinct answers (gold, an equivalent form, near misses, a stray)."""
    rng = random.Random(seed)
    texts, answers = [], []
    for p in rng.sample(range(len(golds)), prompts):
        gold = golds[p]
        pool = [gold, _equivalent(gold, rng), *(_perturb(gold, golds, rng) for _ in range(3)), rng.choice(golds)]
        for _ in range(per_prompt):
            answer = rng.choices(pool, weights=[45, 15, 12, 10, 8, 10])[0]
            steps = "".join(
                f"Step {k}: {rng.randint(1, 99)} + {rng.randint(1, 99)}.\n" for k in range(rng.randint(3, 20))
            )
            texts.append(f"{steps}So the final answer is $\\boxed{{{answer}}}$.")
            answers.append(gold)
    return texts, answers


def test_512_ordinary_completions_are_scored(golds, verify):
    for seed in range(3):
        acc = AccuracyReward()  # empty answer cache: no help from earlier batches
        texts, answers = ordinary_batch(golds, seed)
        scores = acc(None, texts, None, answer=answers)
        assert len(scores) == 512 and 0.3 < sum(scores) / 512 < 0.9
        # ordinary answers verify well inside the 0.5 s limit; a loaded 2-core machine may time out a rare one
        assert acc.stats["verified"] > 0 and acc.stats["timeouts"] <= 5
    # the <= 1 s throughput target is measured by `make bench` (bench/rewards.py), not asserted in a test


def test_in_process_mode_without_workers():
    acc = AccuracyReward(num_workers=0)
    assert acc(None, [boxed("\\sqrt{8}"), boxed("x^3")], None, answer=["2\\sqrt{2}", "x^2"]) == [1.0, 0.0]
    assert acc.stats["fallbacks"] == 2 and acc.stats["verified"] == 2
