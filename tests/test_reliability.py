"""Reliability under faults and bad input: nothing hangs, nothing trains silently on garbage, no
checkpoint or dataset is silently wrong. Each test reproduces one failure found by the fault probe."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import psutil  # a requirement of accelerate
import pytest
import torch

from tests.test_cli import no_model  # noqa: F401  (fixture)


# ---- 1. verifier workers die with their server ------------------------------------------------------------------
def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pids)


def test_killed_verify_server_leaves_no_process():
    """kill -9 of the math-verify server (OOM killer, from outside): its workers must not survive it."""
    from mo_align.rewards.verify import VerifyClient

    client = VerifyClient(num_workers=2, timeout=0.5)
    client.warmup()
    server = psutil.Process(client._proc.pid)
    workers = [p.pid for p in server.children()]
    assert len(workers) == 2
    try:
        os.kill(server.pid, signal.SIGKILL)
        left = _wait_gone(workers, 5.0)
        assert left == [], f"{len(left)} verifier workers outlived their server"
        # and the client recovers: the next batch starts a fresh server
        assert client.run([("\\frac{1}{2}", "0.5")]) == [("ok", True)]
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
        client.close()


_PIPE_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import psutil
    from mo_align.rewards.verify import VerifyClient
    client = VerifyClient(num_workers=2, timeout=0.5)
    client.warmup()
    server = psutil.Process(client._proc.pid)
    print(" ".join(str(p.pid) for p in server.children()), flush=True)
    if sys.argv[1] == "outside":
        os.kill(server.pid, signal.SIGKILL)   # killed from outside, the trainer then exits
    else:
        client._kill()                        # the client's own kill at a missed batch deadline
    os._exit(0)
    """
)


@pytest.mark.parametrize("how", ["outside", "client"])
def test_trainer_pipe_closes_when_the_server_is_killed(how):
    """`python -m mo_align.train ... | tee log` must return: no verifier process may keep the trainer's stdout or
    stderr open after the trainer exits (before the fix the orphaned workers held them forever)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PIPE_CHILD, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        out, _ = proc.communicate(timeout=60)  # EOF on both pipes = nobody holds them
        workers = [int(x) for x in out.split()]
        assert proc.returncode == 0 and len(workers) == 2
        assert _wait_gone(workers, 5.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)


# ---- 4. clarity is linear in the completion length ---------------------------------------------------------------
def test_nonempty_box_equals_the_reference_pattern():
    """The linear scan gives the reference regex's verdict (the oracle) on 20k random strings over the characters
    that matter."""
    import random

    from mo_align.rewards.clarity import NONEMPTY_BOX, has_nonempty_box

    rng = random.Random(0)
    pieces = ["\\boxed{", "\\boxed", "{", "}", " ", "\n", "x", "1", "\\", "b"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert has_nonempty_box(text) == (NONEMPTY_BOX.search(text) is not None), repr(text)


@pytest.mark.parametrize("unit", ["\\boxed{ x", "\\boxed{ x\n1. ", "(step ", " then"])
def test_clarity_on_1mb_is_bounded(unit):
    """1 MB of an unclosed ``\\boxed{ x`` took 89 s (quadratic). The bound here is generous (a loaded 2-core CI);
    ``bench/reliability.py`` measures the real time (about 0.03 s)."""
    from mo_align.rewards.clarity import clarity_score

    text = (unit * ((1 << 20) // len(unit) + 1))[: (1 << 20) - 1] + "}"  # a closed box: the step patterns run too
    start = time.perf_counter()
    clarity_score(text), clarity_score(text, strict=True)
    assert time.perf_counter() - start < 5.0


# ---- 2. non-finite values never train silently -------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
BAD_HYPERPARAMETERS = [  # the probe's accepted values, each now an error naming the field
    ("ctwa", {"cov_targets": NAN}, "ctwa: cov_targets must be finite"),
    ("ctwa", {"lambda_lr": NAN}, "ctwa: lambda_lr must be finite"),
    ("ctwa", {"lambda_lr": INF}, "ctwa: lambda_lr must be finite"),
    ("ctwa", {"lambda_lr": 1e6}, "ctwa: lambda_lr must be finite and >= 0 and <= 10, got 1000000.0"),
    ("ctwa", {"max_weight_ratio": NAN}, "ctwa: max_weight_ratio must be finite"),
    ("gradnorm", {"lr": INF}, "gradnorm: lr must be finite"),
    ("dynamic", {"regularization": NAN}, "dynamic: regularization must be finite and > 0"),
    ("linear", {"weights": [1e308, 1.0, 1.0]}, "linear: weights must be finite, non-negative and <= 1e+06"),
    ("ctwa", {"base": "tchebycheff", "base_kwargs": {"ideal": [NAN] * 3}}, "tchebycheff: ideal must be finite"),
    ("mgda", {"tol": 0.0}, "mgda: tol must be finite and > 0"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"), BAD_HYPERPARAMETERS, ids=[str(c[1])[:30] for c in BAD_HYPERPARAMETERS]
)
def test_non_finite_or_out_of_range_hyperparameters_are_refused(name, kwargs, message):
    from mo_align.weightings import get_weighting

    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("+", r"\+")) as exc:
        get_weighting(name, 3, **kwargs)
    assert "\n" not in str(exc.value)


def test_every_registered_default_is_inside_its_declared_range():
    """Each class's declared ranges and its constructor agree: each default passes, each declared key exists."""
    import inspect

    from mo_align.weightings import WEIGHTINGS
    from mo_align.weightings.validation import check_number

    for name, cls in WEIGHTINGS.items():
        params = inspect.signature(cls.__init__).parameters
        for key, spec in cls.ranges.items():
            assert key in params, (name, key)
            check_number(params[key].default, f"{name}: {key}", spec)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"weighting": "ctwa", "weighting_kwargs": {"lambda_lr": NAN}}, "ctwa: lambda_lr must be finite"),
        ({"learning_rate": NAN}, "learning_rate must be a finite number, got nan"),
        ({"beta": INF}, "beta must be a finite number, got inf"),
    ],
)
@pytest.mark.usefixtures("no_model")
def test_cli_refuses_non_finite_numbers_before_the_model_loads(tmp_path, tiny_model_dir, capsys, override, message):
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_model_dir, **override)  # yaml writes .nan / .inf
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("mo-align: error: "), err


def _reward_inf(prompts, completions, completion_ids=None, **kw):
    return [float("inf")] + [0.5] * (len(completions) - 1)


def _reward_huge(prompts, completions, completion_ids=None, **kw):
    return [1e20 * (i % 2) for i in range(len(completions))]


def _reward_string(prompts, completions, completion_ids=None, **kw):
    return "1.0"


def _reward_scalar(prompts, completions, completion_ids=None, **kw):
    return 1.0


def _reward_all_nan(prompts, completions, completion_ids=None, **kw):
    return [float("nan")] * len(completions)


def _trainer(tiny_model_dir, out, rewards, weighting=None, **overrides):
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import tiny_config, tiny_dataset

    return MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=rewards,
        args=tiny_config(str(out), **overrides),
        train_dataset=tiny_dataset(16),
        weighting=weighting,
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_reward_inf, "reward '_reward_inf' returned inf for completion 0: rewards must be finite"),
        (_reward_huge, "reward '_reward_huge' returned 1e+20 for completion 1"),
        (_reward_string, "reward '_reward_string' returned a str ('1.0')"),
        (_reward_scalar, "reward '_reward_scalar' returned a float (1.0)"),
    ],
)
def test_bad_reward_values_stop_training_naming_the_reward(tiny_model_dir, tmp_path, bad, message):
    """Before: inf or 1e20 gave all-zero advantages and rc 0; a string or a scalar failed inside TRL without naming
    the reward. Now each stops the first batch with an error naming it (a preflight runs the same check)."""
    from mo_align.rewards.checks import RewardError
    from tests.helpers import reward_short

    trainer = _trainer(tiny_model_dir, tmp_path, [reward_short, bad], max_steps=1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(RewardError) as exc:
        trainer.train()
    assert str(exc.value).startswith(message), str(exc.value)
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())  # nothing was trained


def test_preflight_refuses_an_infinite_reward():
    from mo_align.rewards.checks import RewardError
    from mo_align.train import preflight_rewards
    from tests.helpers import tiny_dataset

    with pytest.raises(RewardError, match="reward 'inf' returned inf for completion 0"):
        preflight_rewards([_reward_inf], ["inf"], tiny_dataset(2))


def test_objective_nan_for_a_whole_batch_is_warned_once(tiny_model_dir, tmp_path, caplog):
    """Before: an objective returning NaN for every completion was dropped without a word."""
    from tests.helpers import reward_short

    trainer = _trainer(tiny_model_dir, tmp_path, [reward_short, _reward_all_nan], max_steps=2)
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "is NaN (not applicable) for every" in r.getMessage()]
    assert len(warnings) == 1 and "'_reward_all_nan'" in warnings[0]


def test_non_finite_weights_stop_the_run_naming_the_state(tiny_model_dir, tmp_path):
    """A CTWA whose step size escaped validation (set after construction): its log-weights reach 1e32, exp()
    overflows, and before the guard the run trained on with zero advantages and exited 0."""
    from mo_align.weightings import get_weighting
    from tests.helpers import reward_has_digit, reward_short, reward_vowels

    ctwa = get_weighting("ctwa", 3, statistic="on_policy", cov_targets=100.0)
    ctwa.lambda_lr = 1e30
    trainer = _trainer(
        tiny_model_dir, tmp_path, [reward_has_digit, reward_short, reward_vowels], weighting=ctwa, max_steps=3
    )
    with pytest.raises(FloatingPointError, match=r"^ctwa: non-finite weights .* \(state log_weights reached"):
        trainer.train()
    assert trainer.state.global_step <= 1  # stopped at the first update, not at the end of the run


def test_non_finite_gradient_space_weights_stop_the_run(tiny_model_dir, tmp_path):
    from mo_align.weightings import get_weighting
    from tests.helpers import reward_has_digit, reward_short, reward_vowels

    gradnorm = get_weighting("gradnorm", 3)
    gradnorm.lr = float("inf")
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        [reward_has_digit, reward_short, reward_vowels],
        weighting=gradnorm,
        max_steps=3,
        gramian_space="logprobs",
    )
    with pytest.raises(FloatingPointError, match=r"^gradnorm: non-finite weights .* \(non-finite state: w"):
        trainer.train()
    assert trainer.state.global_step <= 1


# ---- 8. slow rewards are visible ------------------------------------------------------------------------------------
def _reward_slow(prompts, completions, completion_ids=None, **kw):
    time.sleep(0.6)
    return [0.0] * len(completions)


def test_reward_time_is_logged_per_batch(tiny_model_dir, tmp_path):
    from tests.helpers import reward_short

    trainer = _trainer(tiny_model_dir, tmp_path, [reward_short, _reward_slow], max_steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "mo/reward_time/_reward_slow" in h]
    assert len(logged) == 2
    for h in logged:
        assert 0.6 <= h["mo/reward_time/_reward_slow"] < 5.0
        assert 0.0 <= h["mo/reward_time/reward_short"] < 0.1


def test_a_dominant_objective_is_warned_once(caplog):
    """More than half of a generation batch (and at least 0.1 s) in one objective: one warning, naming it."""
    from mo_align.rewards.checks import RewardMonitor

    monitor = RewardMonitor(("fast", "slow"))
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        monitor.times = {"fast": 0.01, "slow": 0.4}
        monitor.end_batch(1.0)  # 40 %: no warning
        monitor.times = {"fast": 0.01, "slow": 0.04}
        monitor.end_batch(0.05)  # 80 % but 0.04 s: noise, no warning
        monitor.times = {"fast": 0.01, "slow": 0.6}
        monitor.end_batch(1.0)  # 60 %: warned
        monitor.end_batch(1.0)  # once
    slow = [r.getMessage() for r in caplog.records if "dominates the step" in r.getMessage()]
    assert slow == [
        "objective 'slow' took 0.60 s of this batch's 1.00 s of generation and scoring (60%): it dominates the step "
        "(see mo/reward_time/*; warned once)"
    ]


# ---- the accuracy checker's health per batch -----------------------------------------------------------------------
def test_accuracy_health_reaches_log_metric():
    from mo_align.rewards.accuracy import AccuracyReward

    acc = AccuracyReward(timeout=2.0)
    logged: dict[str, float] = {}
    texts = ["so \\boxed{3}", "\\boxed{9^{9^{9}}}", "\\boxed{x^2+2x+1}"]
    golds = ["3", "3", "(x+1)^2"]
    assert acc(completions=texts, answer=golds, log_metric=logged.__setitem__) == [1.0, 0.0, 1.0]
    health = {k.rsplit("/", 1)[1]: v for k, v in logged.items() if k.startswith("mo/reward_health/accuracy/")}
    assert health == {"timeouts": 0, "errors": 0, "fallbacks": 0, "guarded": 1, "verified": 1, "cache_hits": 0}
    acc(completions=texts[2:], answer=golds[2:], log_metric=logged.__setitem__)  # per batch, not cumulative
    assert logged["mo/reward_health/accuracy/verified"] == 0 and logged["mo/reward_health/accuracy/cache_hits"] == 1


def test_accuracy_health_is_logged_by_the_trainer_and_solution_is_a_gold_column(tiny_model_dir, tmp_path):
    """A TRL / open-r1 dataset keeps its gold in `solution` (a worked solution ending in a box)."""
    from datasets import Dataset

    from mo_align.rewards import get_reward_funcs
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_short, tiny_config

    prompts = [[{"role": "user", "content": f"Compute {i} + 1."}] for i in range(16)]
    solutions = [f"{i} + 1 = {i + 1}, so the answer is $\\boxed{{{i + 1}}}$." for i in range(16)]
    data = Dataset.from_dict({"prompt": prompts, "solution": solutions})
    (accuracy,) = get_reward_funcs(["accuracy"], {})
    assert accuracy(completions=["\\boxed{5}", "\\boxed{4}"], solution=solutions[4:6]) == [1.0, 0.0]
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[accuracy, reward_short],
        args=tiny_config(str(tmp_path), max_steps=1),
        train_dataset=data,
    )
    trainer.train()
    (row,) = [h for h in trainer.state.log_history if "rewards/accuracy/mean" in h]
    for key in ("timeouts", "errors", "fallbacks"):
        assert row[f"mo/reward_health/accuracy/{key}"] == 0.0


# ---- 5. recipes: alias bombs, huge files, tags; one line naming file and field -------------------------------------
BILLION_LAUGHS = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    + ["run_name: *a8", ""]
)  # 10^9 leaves once expanded


def _cli_error(argv, capsys) -> str:
    from mo_align import train as train_mod

    with pytest.raises(SystemExit) as exc:
        train_mod.cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mo-align: error: "), err
    return err[0]


def test_alias_bomb_is_refused_within_a_second(tmp_path, capsys):
    """Before: 48-63 s to a MemoryError at 3.4 GB (or a hang writing mo_summary.json from run_name)."""
    from mo_align.recipe import RecipeError, check_recipe

    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(RecipeError, match=r"bomb.yaml:\d+:\d+: field 'a4' expands to more than 100,000 values"):
        check_recipe(str(path))
    assert time.perf_counter() - start < 1.0
    line = _cli_error(["--config", str(path)], capsys)
    assert "bomb.yaml" in line and "YAML aliases" in line


def test_recursive_alias_and_moderate_aliases(tmp_path):
    from mo_align.recipe import RecipeError, check_recipe

    (tmp_path / "ok.yaml").write_text("w: &w [0.2, 0.3, 0.5]\nweighting_kwargs: {weights: *w}\n")
    check_recipe(str(tmp_path / "ok.yaml"))  # ordinary aliases stay allowed
    (tmp_path / "loop.yaml").write_text("x: &x [1, *x]\n")
    with pytest.raises(RecipeError, match="field 'x' holds a recursive YAML alias"):
        check_recipe(str(tmp_path / "loop.yaml"))


def test_huge_recipe_is_refused_by_size(tmp_path, capsys):
    """Before: a 100 MB quoted value sat in the YAML reader for minutes. 2 MB is enough to show the bound."""
    path = tmp_path / "huge.yaml"
    path.write_text('run_name: "' + "x" * (2 << 20) + '"\n')
    start = time.perf_counter()
    line = _cli_error(["--config", str(path)], capsys)
    assert time.perf_counter() - start < 1.0
    assert line == f"mo-align: error: {path}: the recipe is 2,097,165 bytes; recipes are at most 1,048,576 bytes"


def test_python_tag_is_one_line_naming_file_and_field(tmp_path, capsys):
    """Before: PyYAML refused it safely but with a 40-line traceback."""
    path = tmp_path / "tag.yaml"
    path.write_text('model_name_or_path: x\nrun_name: !!python/object/apply:os.system ["echo pwned"]\n')
    line = _cli_error(["--config", str(path)], capsys)
    assert line == (
        f"mo-align: error: {path}:2:11: field 'run_name' uses the YAML tag '!!python/object/apply:os.system', which "
        "recipes do not allow (plain values, lists and mappings only)"
    )


def test_yaml_syntax_and_unknown_field_errors_name_the_file(tmp_path, capsys, tiny_model_dir):
    from tests.test_cli import tiny_recipe

    path = tmp_path / "broken.yaml"
    path.write_text("a: [1, 2\nb: 3\n")
    assert _cli_error(["--config", str(path)], capsys) == (
        f"mo-align: error: {path}:2:2: invalid YAML: expected ',' or ']', but got ':'"
    )
    recipe = tiny_recipe(tmp_path, tiny_model_dir, not_a_field="v" * 10_000)
    line = _cli_error(["--config", recipe], capsys)
    assert line.startswith(f"mo-align: error: {recipe}:") and "unknown field 'not_a_field'" in line
    assert len(line) < 700  # the 10 000-character value is never quoted


def test_weighting_error_prints_a_short_excerpt_of_a_huge_value():
    from mo_align.weightings import get_weighting

    with pytest.raises(TypeError) as exc:
        get_weighting("linear", 3, weights="w" * 1_000_000)
    assert len(str(exc.value)) < 200 and "(1000000 chars)" in str(exc.value)


# ---- 6. secrets and identifiers --------------------------------------------------------------------------------------
def test_hub_token_is_refused_on_the_command_line_and_in_a_recipe(tmp_path, capsys, tiny_model_dir):
    """Before: --hub_token was redacted in the summary and card but stored in plain text in wandb's offline run
    metadata (uploaded by `wandb sync`). Now it never reaches a run: the flag is refused, pointing to HF_TOKEN."""
    from tests.test_cli import tiny_recipe

    secret = "hf_" + "a" * 34
    recipe = tiny_recipe(tmp_path, tiny_model_dir, report_to="wandb")
    for argv in (["--config", recipe, "--hub_token", secret], ["--config", recipe, f"--hub_token={secret}"]):
        line = _cli_error(argv, capsys)
        assert "export HF_TOKEN instead" in line and secret not in line
    line = _cli_error(["--config", tiny_recipe(tmp_path, tiny_model_dir, hub_token=secret)], capsys)
    assert "hub_token in a recipe" in line and secret not in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("wandb"))  # nothing ran, no tracker file


@pytest.mark.parametrize("repo_id", ['me/model"); import os; ("', "a/b/c", "me/" + "x" * 100, "-me/x"])
def test_invalid_hub_model_id_is_refused_before_anything_runs(tmp_path, capsys, tiny_model_dir, repo_id):
    """Before: a quoted hub_model_id was pasted raw into the model card's code snippet."""
    from tests.test_cli import tiny_recipe

    line = _cli_error(["--config", tiny_recipe(tmp_path, tiny_model_dir, hub_model_id=repo_id)], capsys)
    assert "is not a valid Hub repo id" in line and "hub_model_id" in line
    if not repo_id.startswith("-"):  # (argparse reads a leading '-' as an option)
        line = _cli_error(["--config", tiny_recipe(tmp_path, tiny_model_dir), "--hub_model_id", repo_id], capsys)
        assert "is not a valid Hub repo id" in line


# ---- 3. checkpoints are complete or ignored -----------------------------------------------------------------------
_KILLED_MID_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import Trainer
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset

    write_rng = Trainer._save_rng_state
    def killed(self, output_dir):  # model, optimizer and scheduler of checkpoint-2 are on disk: die now
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return write_rng(self, output_dir)
    Trainer._save_rng_state = killed
    args = tiny_config(sys.argv[2], max_steps=3, save_strategy="steps", save_steps=1, save_total_limit=1)
    MOGRPOTrainer(model=sys.argv[1], reward_funcs=[reward_has_digit, reward_short], args=args,
                  train_dataset=tiny_dataset(16)).train()
    """
)


def test_checkpoint_killed_mid_write_resumes_from_the_previous_complete_one(tiny_model_dir, tmp_path, caplog):
    """Before: auto-resume took the newest, half-written checkpoint. save_total_limit 1 used to delete the complete
    checkpoint-1 as soon as checkpoint-2's model was written."""
    from mo_align.checkpoints import MARKER, last_complete_checkpoint
    from tests.helpers import reward_has_digit, reward_short

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_CHECKPOINT, tiny_model_dir, str(out)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "checkpoint-2" / "optimizer.pt").exists() and not (out / "checkpoint-2" / MARKER).exists()
    newest, skipped = last_complete_checkpoint(str(out))
    assert newest == str(out / "checkpoint-1")
    assert [s[0] for s in skipped] == [str(out / "checkpoint-2")] and MARKER in skipped[0][1]

    trainer = _trainer(
        tiny_model_dir, out, [reward_has_digit, reward_short], max_steps=3, save_strategy="steps", save_steps=1
    )
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        trainer.train(resume_from_checkpoint=True)
    assert any(f"skipping incomplete checkpoint {out / 'checkpoint-2'}" in r.getMessage() for r in caplog.records)
    steps = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert steps == [1, 2, 3]  # step 1 from checkpoint-1's history, then 2 and 3 trained again
    assert all((out / f"checkpoint-{s}" / MARKER).exists() for s in (2, 3))


@pytest.fixture(scope="module")
def saved_checkpoint(tiny_model_dir, tmp_path_factory):
    from tests.helpers import reward_has_digit, reward_short

    out = tmp_path_factory.mktemp("ckpt")
    _trainer(
        tiny_model_dir, out, [reward_has_digit, reward_short], max_steps=1, save_strategy="steps", save_steps=1
    ).train()
    return out / "checkpoint-1"


@pytest.mark.parametrize("damage", ["scheduler.pt", "rng_state.pth", "truncate mo_state.pt", "legacy rng_state.pth"])
def test_checkpoint_missing_a_file_for_exact_resume_is_an_error_naming_it(
    tiny_model_dir, tmp_path, saved_checkpoint, damage
):
    """Before: no scheduler.pt / rng_state.pth resumed with rc 0 to a result 1.4e-3 away from the uninterrupted
    run; a truncated mo_state.pt said 'PytorchStreamReader failed' without the file name."""
    import shutil

    from mo_align.checkpoints import MARKER
    from tests.helpers import reward_has_digit, reward_short

    ckpt = tmp_path / "checkpoint-1"
    shutil.copytree(saved_checkpoint, ckpt)
    name = damage.split()[-1]
    if damage.startswith("truncate"):
        (ckpt / name).write_bytes(b"")
        expected = rf"{ckpt / name} is truncated or changed \(0 bytes"
    else:
        if damage.startswith("legacy"):  # a checkpoint without a marker is checked on its files alone
            (ckpt / MARKER).unlink()
        (ckpt / name).unlink()
        expected = f"{ckpt / name} is missing: this checkpoint cannot be resumed exactly"
    trainer = _trainer(tiny_model_dir, tmp_path / "again", [reward_has_digit, reward_short], max_steps=2)
    with pytest.raises(FileNotFoundError, match=expected):
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert trainer.state.global_step == 0


def test_legacy_truncated_mo_state_names_the_file(tiny_model_dir, tmp_path, saved_checkpoint):
    import shutil

    from mo_align.checkpoints import MARKER
    from tests.helpers import reward_has_digit, reward_short

    ckpt = tmp_path / "checkpoint-1"
    shutil.copytree(saved_checkpoint, ckpt)
    (ckpt / MARKER).unlink()
    data = (ckpt / "mo_state.pt").read_bytes()
    (ckpt / "mo_state.pt").write_bytes(data[: len(data) // 2])
    trainer = _trainer(tiny_model_dir, tmp_path / "again", [reward_has_digit, reward_short], max_steps=2)
    with pytest.raises(RuntimeError, match=f"{ckpt / 'mo_state.pt'} is unreadable"):
        trainer.train(resume_from_checkpoint=str(ckpt))


# ---- 7. data prep: no silent overwrite, no 'None' gold, no tiny split, parse errors with file and line -------------
def _source(path, n=60, row_overrides=None):
    import json

    with open(path, "w") as f:
        for i in range(n):
            row = {
                "problem": f"What is {i} + 1?",
                "answer": str(i + 1),
                "level": 1,
                "subject": "s",
                "unique_id": f"u{i}",
            }
            row.update((row_overrides or {}).get(i, {}))
            f.write(json.dumps(row) + "\n")
    return str(path)


def _prep(argv, capsys) -> tuple[int, str]:
    from mo_align.data import math500

    try:
        code = math500.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


def test_data_prep_refuses_a_non_empty_output_and_overwrite_removes_every_split_file(tmp_path, capsys):
    """Before: after a format switch a stale 3-row parquet shadowed the new jsonl split."""
    from mo_align.data.math500 import load_split

    out = tmp_path / "data"
    assert _prep(["--source", _source(tmp_path / "a.jsonl", 50), "--out", str(out)], capsys)[0] == 0
    source = _source(tmp_path / "b.jsonl", 100)
    code, err = _prep(["--source", source, "--out", str(out), "--format", "jsonl"], capsys)
    assert code == 2 and "is not empty" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet", "validation.parquet"]  # untouched
    (out / "val.jsonl").write_text("{}\n")  # an old-style split file too
    assert _prep(["--source", source, "--out", str(out), "--format", "jsonl", "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(out)) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    assert len(load_split(str(out), "train")) == 60 and len(load_split(str(out), "val")) == 20
    (out / "notes.txt").write_text("mine")
    code, err = _prep(["--source", source, "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and "not split files (notes.txt); not removing" in err


def test_data_prep_rejects_null_golds_tiny_sources_and_names_file_and_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    code, err = _prep(["--source", _source(tmp_path / "n.jsonl", 60, {7: {"answer": None}}), "--out", out], capsys)
    assert code == 2 and err.endswith("n.jsonl: row 7 (u7): the gold answer is null")
    code, err = _prep(["--source", _source(tmp_path / "five.jsonl", 5), "--out", out], capsys)
    assert code == 2 and "five.jsonl has 5 rows: a 60/20/20 split needs at least 50" in err
    (tmp_path / "empty.jsonl").write_text("")
    code, err = _prep(["--source", str(tmp_path / "empty.jsonl"), "--out", out], capsys)
    assert code == 2 and err.endswith("empty.jsonl: the file holds no rows")
    broken = tmp_path / "broken.jsonl"
    good = pathlib.Path(_source(tmp_path / "ok.jsonl", 60)).read_text()
    broken.write_text(good.replace('"u3"}', '"u3"', 1))
    code, err = _prep(["--source", str(broken), "--out", out], capsys)
    assert code == 2 and f"{broken}:4: invalid JSON" in err
    assert not os.path.exists(out)  # nothing was written


def test_data_prep_push_to_hub_publishes_the_three_splits(tmp_path, capsys, monkeypatch):
    """--push-to-hub with the Hub client mocked: nothing leaves the machine."""
    import datasets

    pushed = {}

    def fake_push(self, repo_id, **kwargs):
        pushed.update(repo_id=repo_id, splits={k: len(v) for k, v in self.items()}, kwargs=kwargs)

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", fake_push)
    out = tmp_path / "out"
    source = _source(tmp_path / "s.jsonl", 100)
    assert _prep(["--source", source, "--out", str(out), "--push-to-hub", "you/math500-ctwa"], capsys)[0] == 0
    assert pushed == {
        "repo_id": "you/math500-ctwa",
        "splits": {"train": 60, "validation": 20, "test": 20},
        "kwargs": {"private": False},
    }
    code, err = _prep(["--source", source, "--out", str(tmp_path / "o2"), "--push-to-hub", 'a"b'], capsys)
    assert code == 2 and "is not a valid Hub repo id" in err and not (tmp_path / "o2").exists()


def test_a_recipe_reads_the_pushed_dataset_with_trl_split_names(tmp_path, monkeypatch):
    """`dataset_name: you/math500-ctwa` with TRL's dataset_test_split (validation or the old val)."""
    import datasets

    from mo_align.configs import MOScriptArguments
    from mo_align.data.math500 import load_source, split_math500
    from mo_align.train import load_datasets

    hub = datasets.DatasetDict(split_math500(load_source(_source(tmp_path / "s.jsonl", 100))))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: hub)
    for test_split in ("validation", "val"):
        args = MOScriptArguments(
            reward_funcs=["accuracy"], dataset_name="you/math500-ctwa", dataset_test_split=test_split
        )
        train, evaluation = load_datasets(args, evaluate=True)
        assert (len(train), len(evaluation)) == (60, 20)
    assert load_datasets(args, evaluate=False)[1] is None
    local = tmp_path / "local"
    hub["train"].to_json(str(local / "train.jsonl"))
    hub["validation"].to_json(str(local / "val.jsonl"))  # an old layout
    args = MOScriptArguments(reward_funcs=["accuracy"], dataset_path=str(local), dataset_test_split="validation")
    assert len(load_datasets(args, evaluate=True)[1]) == 20
