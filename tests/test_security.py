"""Files and strings from elsewhere never run code or leak secrets: a crafted ``mo_state.pt`` is refused unread, the
Hub token is refused in every command-line spelling and never reaches a file of the run, the model card shows user
strings as text only, and a recipe calls only declared reward factories with kwargs."""

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from mo_align.rewards import reward_factory


# ---- 1. a checkpoint's mo_state.pt is loaded as tensors and plain values only ---------------------------------------
class _OpensAFile:
    """Unpickled by a full unpickler, this becomes ``open(path, "w")``: the file appearing proves code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _craft(path, target, legacy):
    payload = {"weighting": "linear", "weighting_state": {}, "rewards": {}, "x": _OpensAFile(target)}
    if legacy:  # a bare pickle, the format torch.load also reads
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)


@pytest.fixture(scope="module")
def saved_checkpoint(tiny_model_dir, tmp_path_factory):
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset

    out = tmp_path_factory.mktemp("ckpt")
    args = tiny_config(str(out), max_steps=1, save_strategy="steps", save_steps=1)
    MOGRPOTrainer(
        model=tiny_model_dir, reward_funcs=[reward_has_digit, reward_short], args=args, train_dataset=tiny_dataset(16)
    ).train()
    return out / "checkpoint-1"


def test_a_real_mo_state_loads_as_tensors_and_plain_values(saved_checkpoint):
    from mo_align.trainer.state import read_mo_state

    state = read_mo_state(str(saved_checkpoint / "mo_state.pt"))
    assert state["weighting"] == "linear"
    assert torch.equal(state["weighting_state"]["weights"], torch.tensor([0.5, 0.5]))
    assert len(state["history"]["train_reward"]) == 1


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "bare-pickle"])
def test_crafted_mo_state_is_refused_on_resume_without_running_it(tiny_model_dir, tmp_path, saved_checkpoint, legacy):
    """Before: torch.load(weights_only=False) ran the payload (the file appeared), then resumed or failed later.
    Now: one line naming the file; nothing of it runs. The marker is rewritten, as whoever crafts a checkpoint can."""
    from mo_align.checkpoints import mark_complete
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset

    ckpt, target = tmp_path / "checkpoint-1", tmp_path / "PAYLOAD_RAN"
    shutil.copytree(saved_checkpoint, ckpt)
    _craft(ckpt / "mo_state.pt", target, legacy)
    mark_complete(str(ckpt))
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short],
        args=tiny_config(str(tmp_path / "again"), max_steps=2),
        train_dataset=tiny_dataset(16),
    )
    with pytest.raises(RuntimeError) as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    message = str(info.value)
    assert not target.exists()
    assert message.startswith(f"{ckpt / 'mo_state.pt'} is refused") and "\n" not in message and len(message) <= 300
    if not legacy:
        assert "builtins.open" in message or "io.open" in message


def test_crafted_mo_state_is_refused_by_the_soup(tmp_path):
    """The soup reads the reward state of a run's newest complete checkpoint: the same refusal, nothing runs."""
    from mo_align.checkpoints import mark_complete
    from mo_align.soup.evaluate import reward_state

    ckpt, target = tmp_path / "run" / "checkpoint-3", tmp_path / "PAYLOAD_RAN"
    ckpt.mkdir(parents=True)
    _craft(ckpt / "mo_state.pt", target, legacy=False)
    mark_complete(str(ckpt))
    with pytest.raises(RuntimeError, match=f"^{ckpt / 'mo_state.pt'} is refused"):
        reward_state(str(tmp_path / "run"))
    assert not target.exists()
    os.remove(ckpt / "mo_state.pt")
    torch.save({"rewards": {"conciseness": {"total_tokens": 40, "count": 5, "first_batch_mean": 8.0}}}, ckpt / "x")
    os.replace(ckpt / "x", ckpt / "mo_state.pt")
    mark_complete(str(ckpt))
    states, path = reward_state(str(tmp_path / "run"))
    assert states == {"conciseness": {"total_tokens": 40, "count": 5, "first_batch_mean": 8.0}}
    assert path == str(ckpt / "mo_state.pt")


# ---- 2. the Hub token: refused on the command line in every spelling, never in a file of a run ---------------------
SECRET = "hf_" + "Kt9" * 11 + "w"
SPELLINGS = [
    ["--hub_token", SECRET],
    [f"--hub_token={SECRET}"],
    ["--hub-token", SECRET],
    [f"--hub-token={SECRET}"],
    ["--hub_tok", SECRET],
    [f"--hub-tok={SECRET}"],
]


@pytest.fixture
def no_training(monkeypatch):
    """Building a trainer or starting a process fails the test: the refusal must come before either."""
    import subprocess

    import mo_align.trainer

    def fail(*a, **k):
        raise AssertionError("the run started although the command line held a hub token")

    monkeypatch.setattr(mo_align.trainer.MOGRPOTrainer, "__init__", fail)
    monkeypatch.setattr(subprocess, "run", fail)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mo-align: error: "), err
    assert SECRET not in err[0] and len(err[0]) <= 300
    return err[0]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: " ".join(s).replace(SECRET, "X"))
@pytest.mark.parametrize("entry", ["python -m mo_align.train", "mo-align train", "mo-align train --accelerate"])
def test_hub_token_is_refused_in_every_spelling(tmp_path, capsys, tiny_model_dir, no_training, spelling, entry):
    """Before: --hub-token X, --hub-token=X and the abbreviation --hub_tok X (argparse prefix matching) set the
    token, which wandb then stored in its offline run file; through --accelerate_config the token was also printed
    in the accelerate command line. Now each is refused in one line before anything runs."""
    from mo_align import cli
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    argv = ["--config", tiny_recipe(tmp_path, tiny_model_dir, report_to="wandb"), *spelling]
    if entry == "python -m mo_align.train":
        with pytest.raises(SystemExit) as exc:
            train_mod.cli(argv)
        assert exc.value.code == 2
    else:
        extra = ["--accelerate_config", "cpu"] if entry.endswith("--accelerate") else []
        assert cli.main(["train", *extra, *argv]) == 2
    line = _one_error_line(capsys)
    assert line.endswith(
        "on the command line is recorded by trackers (wandb, trackio), the run summary and shell "
        "history; export HF_TOKEN instead"
    )
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("wandb"))


def test_a_hub_token_set_by_any_other_spelling_is_refused_after_parsing(tmp_path, tiny_model_dir, monkeypatch):
    """The parsed value is checked too: with the command-line scan switched off, --hub-token X still stops."""
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    monkeypatch.setattr(train_mod, "refuse_hub_token", lambda argv: None)
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(ValueError, match=r"^hub_token was set on the command line") as info:
        train_mod.parse_args(["--config", recipe, "--hub-token", SECRET])
    assert SECRET not in str(info.value)
    assert train_mod.parse_args(["--config", recipe, "--hub_model_id", "me/tiny"])[1].hub_token is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hub_token": SECRET}, "hub_token"),
        ({"hub-token": SECRET}, "hub-token"),
        ({"env": {"HF_TOKEN": SECRET}}, "env.HF_TOKEN"),
    ],
)
def test_a_hub_token_in_a_recipe_is_refused(tmp_path, capsys, tiny_model_dir, no_training, overrides, field):
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    with pytest.raises(SystemExit):
        train_mod.cli(["--config", tiny_recipe(tmp_path, tiny_model_dir, **overrides)])
    line = _one_error_line(capsys)
    assert f": {field} in a recipe is a secret in a file that gets shared; export HF_TOKEN instead" in line


def test_hf_token_reaches_no_file_of_a_cli_run(tmp_path, tiny_model_dir):
    """`mo-align train` with HF_TOKEN exported (the supported way), wandb offline, a checkpoint, then the model card:
    no file under the test's directory (run, checkpoint, training_args.bin, summary, card, wandb's run files, the
    HF cache) and neither output stream holds the token."""
    import subprocess
    import sys

    import yaml

    from mo_align.hub import write_model_card
    from mo_align.hub.push import load_summary
    from tests.test_cli import ROOT, tiny_recipe

    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        report_to=["wandb"],
        run_name="token-check",
        max_steps=2,
        eval_steps=2,
        dataset_kwargs={"n_train": 16, "n_eval": 4, "seed": 0},
        per_device_train_batch_size=8,
        per_device_eval_batch_size=4,
        max_completion_length=8,
        save_strategy="steps",
        save_steps=2,
        reward_funcs=["accuracy", "conciseness"],
        reward_kwargs={"accuracy": {"mode": "reference"}},
        weighting_kwargs={"weights": [0.5, 0.5]},
        hub_model_id="me/tiny-mo-align",
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_TOKEN": SECRET,
        "HF_HOME": str(tmp_path / "hf_home"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mo_align.cli", "train", "--config", recipe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "out"
    write_model_card(str(run), load_summary(str(run)), "me/tiny-mo-align")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb")) and (run / "checkpoint-2" / "training_args.bin")
    assert (run / "README.md").is_file() and yaml.safe_load(Path(recipe).read_text())["report_to"] == ["wandb"]
    assert [str(p) for p in files if SECRET.encode() in p.read_bytes()] == []
    assert SECRET not in proc.stdout + proc.stderr


# ---- 3. the model card shows user strings as text ------------------------------------------------------------------
EVIL = (
    "x\n```\n# INJECTED HEADING\n<img src=x onerror=alert(1)>\n```\n<script>alert(1)</script> *em* _u_ "
    "[l](javascript:alert(1)) ![i](http://t.example/i.png) a|b ~~s~~ $x$ `` \\ &lt; --token hf_NotARealToken99"
)
SHOWN = " ".join(EVIL.replace("hf_NotARealToken99", "***").split())  # one line, the token redacted
HEADINGS = [
    ("h1", "tiny-mo"),
    *(
        ("h2", h)
        for h in (
            "Algorithm",
            "Objectives",
            "Evaluation",
            "Objective weights",
            "Interference",
            "Dataset",
            "Launch command",
            "Usage",
            "Papers",
            "Citation",
            "Framework versions",
        )
    ),
]


def _hostile_summary():
    from tests.test_hub import _summary

    objectives = ["acc`" + EVIL, "c|d\\ <img src=x onerror=alert(1)> --token x"]
    per = {objectives[0]: 0.25, objectives[1]: 0.5}
    return _summary(
        run_name=EVIL,
        algorithm="mgda" + EVIL,
        objectives=objectives,
        dataset_name="d`" + EVIL,  # the summary's key (mo_align.runs.summary.RunSummary)
        launch_command=f"mo-align train --run_name '{EVIL}'",
        weighting_hyperparameters={EVIL: EVIL, "w": [0.5, "<script>x</script>"]},
        advantage_estimator=EVIL,
        eval=[{"step": 0, "means": per, "completion_length": 8.0}, {"step": 4, "means": per}],
        start=per,
        final=per,
        best=per,
        delta=per,
        weights=[{"step": 1, "weights": per}, {"step": 4, "weights": per}],
        events=[{"step": 12, "kind": EVIL, "objective": objectives[1], "message": EVIL}],
    )


def _tokens(tokens):
    for token in tokens:
        yield token
        yield from _tokens(token.children or [])


def _check_card(card: str, expected_front: dict, dataset: str) -> None:
    """Parsed as CommonMark + GitHub tables: no raw HTML, only the template's headings and code blocks, every user
    string rendered as exactly its characters, the front matter a plain YAML mapping."""
    import html

    import yaml
    from markdown_it import MarkdownIt

    front, body = re.fullmatch(r"---\n(.*?)^---\n(.*)", card, re.S | re.M).groups()
    parser = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    tokens = list(_tokens(parser.parse(body)))
    assert [t.type for t in tokens if t.type.startswith("html")] == []
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == HEADINGS
    fences = [t for t in tokens if t.type == "fence"]
    assert [t.info for t in fences] == ["bash", "python", "bibtex"]
    assert fences[0].content == f"mo-align train --run_name '{EVIL}'\n".replace("hf_NotARealToken99'", "***")
    rendered = parser.render(body)
    assert "<script" not in rendered and "onerror=alert" not in rendered.replace("onerror=alert(1)&gt;", "")
    assert re.findall(r"<img [^>]*>", rendered) == ['<img src="mo_weights.png" alt="objective weight trajectory" />']
    links = set(re.findall(r'<a href="([^"]*)"', rendered))
    assert links <= {"https://github.com/huggingface/trl"}, links
    shown = html.escape(SHOWN, quote=False)  # each field renders as exactly its characters
    code = f"<code>{html.escape(dataset, quote=False)}</code>"  # the dataset, in a code span
    for fragment in (f"<td>run_name</td>\n<td>{shown}</td>", f"<strong>mgda{shown}</strong>", code):
        assert fragment in rendered, fragment
    assert "hf_NotARealToken99" not in card
    assert yaml.safe_load(front) == expected_front


def test_card_shows_hostile_strings_as_text_only(tmp_path):
    """Before: the run name's fence closed the launch command's code block ('# INJECTED HEADING' and a raw <img
    onerror> in the card), a backtick in the dataset put a raw <script> in it, an objective name ending in
    '--token x`' lost its closing backtick to redaction. Now every field renders as its own characters."""
    from mo_align.hub import write_model_card

    card = write_model_card(
        tmp_path, _hostile_summary(), "someone/tiny-mo", base_model=EVIL, tags=[EVIL, "ok-tag"], license=EVIL
    )
    tags = ["mo_align", "trl", "grpo", "multi-objective", "mgda" + SHOWN, SHOWN, "ok-tag"]
    front = {"license": SHOWN, "library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    _check_card(card, front, dataset="d`" + SHOWN)
    assert f"This model was fine-tuned from ````{SHOWN}```` with" in card  # not a Hub id: a code span, no link


def test_card_of_a_hostile_repo_id(tmp_path):
    """The trainer's card falls back to the output directory's name for the repo id: the title is text, the usage
    snippet a Python string literal inside a fence no backtick run of it can close."""
    import html
    import json

    from markdown_it import MarkdownIt

    from mo_align.hub import render_model_card

    repo = 'a"b``` `c\n# H <img src=x onerror=alert(1)>'
    card = render_model_card({}, repo)
    parser = MarkdownIt("commonmark")
    tokens = list(_tokens(parser.parse(card.split("---\n", 2)[2])))
    assert [t.type for t in tokens if t.type.startswith("html")] == []
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert [h for h, _ in headings] == ["h1"] + ["h2"] * 11
    assert parser.renderInline(headings[0][1]) == html.escape('a"b``` `c # H <img src=x onerror=alert(1)>')
    usage = [t for t in tokens if t.type == "fence" and t.info == "python"]
    assert len(usage) == 1 and f"AutoModelForCausalLM.from_pretrained({json.dumps(repo)})" in usage[0].content


def test_push_renders_the_card_through_the_same_escaping(tmp_path, capsys):
    """`mo-align push` writes the card it uploads from the run's summary: the same checks on the uploaded file."""
    import json

    from mo_align.hub import main as push
    from tests.test_hub import FakeHfApi

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "mo_summary.json").write_text(json.dumps(_hostile_summary()))
    api = FakeHfApi(tmp_path / "hub")
    assert push([str(run), "--repo-id", "someone/tiny-mo", "--dataset", EVIL, "--license", EVIL], api=api) == 0
    card = (api.uploaded("someone/tiny-mo") / "README.md").read_text()
    tags = ["mo_align", "trl", "grpo", "multi-objective", "mgda" + SHOWN]
    front = {"license": SHOWN, "library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    _check_card(card, front, dataset=SHOWN)


# ---- 4. a recipe calls only declared reward factories with kwargs -------------------------------------------------
@reward_factory
class LongerThan:
    """A declared factory (a class): 1.0 for completions with more than ``limit`` tokens."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return [float(len(ids) > self.limit) for ids in completion_ids]


class LongerThanUndeclared(LongerThan):
    """Subclasses a declared factory without declaring itself: the mark is not inherited."""


@reward_factory
def contains(word: str = "7"):
    """A declared factory (a function)."""

    def reward(prompts, completions, completion_ids=None, **kwargs):
        return [float(word in c) for c in completions]

    return reward


def test_a_recipe_cannot_call_an_arbitrary_callable_with_kwargs(tmp_path, capsys, tiny_model_dir, no_training):
    """Before: validation called subprocess.getoutput(cmd=...) -- the command ran (the file appeared) and the
    string it returned then failed as 'not callable'. Now the kwargs are refused in one line naming the key."""
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    target = tmp_path / "COMMAND_RAN"
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        reward_funcs=["accuracy", "subprocess.getoutput"],
        reward_kwargs={"subprocess.getoutput": {"cmd": f"touch {target}"}},
    )
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", recipe])
    line = _one_error_line(capsys)
    assert not target.exists()
    assert line == (
        f"mo-align: error: {recipe}: reward_kwargs['subprocess.getoutput']: 'subprocess.getoutput' is not a declared "
        "reward factory, so it takes no kwargs (given ['cmd']); mark a factory with @mo_align.rewards.reward_factory"
    )


def test_plain_functions_take_no_kwargs_and_declared_factories_do():
    from mo_align.rewards import AccuracyReward, get_reward_funcs, is_reward_factory

    with pytest.raises(ValueError, match=r"^reward_kwargs\['tests.helpers.reward_short'\]: .* \(given \['scale'\]\)"):
        get_reward_funcs(["tests.helpers.reward_short"], {"tests.helpers.reward_short": {"scale": 2}})
    with pytest.raises(ValueError, match=r"^reward_kwargs\['tests.test_security.LongerThanUndeclared'\]"):
        get_reward_funcs(
            ["tests.test_security.LongerThanUndeclared"],
            {LongerThanUndeclared.__module__ + ".LongerThanUndeclared": {"limit": 1}},
        )
    # built-in factories, by name or by class path, still take their kwargs
    acc, conc = get_reward_funcs(["accuracy", "conciseness"], {"accuracy": {"mode": "reference", "timeout": 2.0}})
    assert (acc.mode, acc.timeout, acc.__name__, conc.__name__) == ("reference", 2.0, "accuracy", "conciseness")
    (by_path,) = get_reward_funcs(
        ["mo_align.rewards.accuracy.AccuracyReward"],
        {"mo_align.rewards.accuracy.AccuracyReward": {"mode": "reference"}},
    )
    assert isinstance(by_path, AccuracyReward) and by_path.mode == "reference"
    # declared user factories: a class and a function, built with their kwargs (or none)
    names = ["tests.test_security.LongerThan", "tests.test_security.contains", "tests.helpers.reward_short"]
    longer, has_word, short = get_reward_funcs(names, {names[0]: {"limit": 2}, names[1]: {"word": "x"}})
    assert isinstance(longer, LongerThan) and longer.limit == 2 and longer.__name__ == "LongerThan"
    assert longer([], ["", ""], [[1, 2], [1, 2, 3]]) == [0.0, 1.0]
    assert has_word([], ["axe", "boat"]) == [1.0, 0.0] and has_word.__name__ == "reward"
    assert short([], ["a"], [[1, 2, 3, 4]]) == [0.75]
    (default_word,) = get_reward_funcs(["tests.test_security.contains"])  # a factory is called even without kwargs
    assert default_word([], ["17", "x"]) == [1.0, 0.0]
    assert is_reward_factory(LongerThan) and is_reward_factory(AccuracyReward)
    assert not is_reward_factory(LongerThanUndeclared) and not is_reward_factory(print)
