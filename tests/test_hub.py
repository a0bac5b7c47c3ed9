"""Model card and Hub push, fully offline: a fake ``HfApi`` records and copies what would be uploaded."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml
from huggingface_hub.utils import filter_repo_objects

from mo_align import hub
from mo_align.trainer import MOGRPOTrainer
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


SECRET = "hf_SECRET123"
REPO = "someone/tiny-mo"


class FakeHfApi:
    """The two ``HfApi`` methods mo_align and transformers use; uploads are copied under ``root/<repo_id>``."""

    def __init__(self, root, fail_on: str | None = None, error: Exception | None = None):
        self.root = Path(root)
        self.fail_on = fail_on
        self.error = error
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(
            ("create_repo", {"repo_id": repo_id, "token": token, "private": private, "exist_ok": exist_ok})
        )
        if self.fail_on == "create_repo":
            raise self.error
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        commit_message=None,
        token=None,
        ignore_patterns=None,
        allow_patterns=None,
        run_as_future=False,
        path_in_repo=None,
        revision=None,
        **kwargs,
    ):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        kept = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        self.calls.append(
            ("upload_folder", {"repo_id": repo_id, "token": token, "commit_message": commit_message, "files": kept})
        )
        if self.fail_on == "upload_folder":
            raise self.error
        dest = self.root / repo_id / (path_in_repo or "")
        for rel in kept:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, dest / rel)
        info = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc", oid="0123abc")
        if run_as_future:
            future: Future = Future()
            future.set_result(info)
            return future
        return info

    def uploaded(self, repo_id=REPO) -> Path:
        return self.root / repo_id


def _snapshot(folder) -> dict[str, str]:
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _summary(**overrides):
    summary = {
        "version": 1,
        "run_name": "tiny-mgda",
        "output_dir": "/runs/tiny-mgda",
        "algorithm": "mgda",
        "weighting_hyperparameters": {"normalize_gradients": False, "eps": 1e-8},
        "advantage_estimator": "reinforce_pp",
        "objectives": ["accuracy", "conciseness"],
        "seed": 3,
        "launch_command": "python -m mo_align.train --config recipes/tiny/mgda.yaml --learning_rate 5e-4",
        "eval": [
            {"step": 0, "means": {"accuracy": 0.25, "conciseness": 0.5}, "completion_length": 20.0},
            {"step": 10, "means": {"accuracy": 0.5, "conciseness": 0.375}, "completion_length": 16.0},
            {"step": 20, "means": {"accuracy": 0.625, "conciseness": 0.4}, "completion_length": 14.0},
        ],
        "start": {"accuracy": 0.25, "conciseness": 0.5},
        "final": {"accuracy": 0.625, "conciseness": 0.4},
        "best": {"accuracy": 0.625, "conciseness": 0.5},
        "delta": {"accuracy": 0.375, "conciseness": -0.1},
        "weights": [
            {"step": s, "weights": {"accuracy": 0.5 + 0.01 * s, "conciseness": 0.5 - 0.01 * s}} for s in range(1, 21)
        ],
        "cov_ema": [],
        "train_reward": [],
        "events": [
            {"step": 12, "kind": "eval_drop", "objective": "conciseness", "message": "fell 0.125 | below its start"}
        ],
    }
    summary.update(overrides)
    return summary


# ---- the card ------------------------------------------------------------------------------------------------------
def test_card_has_every_section_and_the_plot(tmp_path):
    card = hub.write_model_card(
        tmp_path, _summary(), REPO, dataset="HuggingFaceH4/MATH-500", base_model="Qwen/Qwen2.5-1.5B-Instruct"
    )
    assert (tmp_path / "README.md").read_text() == card
    front = _front_matter(card)
    assert front["base_model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert front["library_name"] == "transformers"
    assert front["datasets"] == ["HuggingFaceH4/MATH-500"]
    assert {"mo_align", "trl", "grpo", "multi-objective", "mgda"} <= set(front["tags"])
    # algorithm and hyperparameters
    assert "**mgda**: MGDA" in card
    assert "| `normalize_gradients` | false |" in card
    assert "| advantage_estimator | reinforce_pp |" in card
    assert "| seed | 3 |" in card
    # objectives and the per-objective eval table (start, final, best, delta)
    assert "1. `accuracy`" in card and "2. `conciseness`" in card
    assert "| objective | start | final | best | delta |" in card
    assert "| `accuracy` | 0.2500 | 0.6250 | 0.6250 | +0.3750 |" in card
    assert "| `conciseness` | 0.5000 | 0.4000 | 0.5000 | -0.1000 |" in card
    assert "start = step 0, final = step 20" in card
    # the weight trajectory plot, written next to the card and referenced by a relative path
    assert "![objective weight trajectory](mo_weights.png)" in card
    assert (tmp_path / "mo_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", (tmp_path / "mo_weights.png").read_bytes()[16:24])
    assert width > 400 and height > 200
    assert "| `accuracy` | 0.5100 | 0.7000 |" in card  # first / last weights
    # the summary's interference verdict (none recorded in this hand-made summary), then the monitor's events
    assert "Verdict: not recorded (no intervals in the run summary)" in card
    assert "Verdict: `accuracy` (the rule" in hub.render_model_card(_summary(interference=["accuracy"]), REPO)
    # interference events (the pipe in the message does not break the table)
    assert "| 12 | eval_drop | conciseness | fell 0.125 \\| below its start |" in card
    # dataset, papers, launch command
    assert "[HuggingFaceH4/MATH-500](https://huggingface.co/datasets/HuggingFaceH4/MATH-500)" in card
    assert "https://huggingface.co/papers/2602.06869" in card
    assert "https://huggingface.co/papers/1810.04650" in card  # MGDA's own paper
    assert "```bash\npython -m mo_align.train --config recipes/tiny/mgda.yaml --learning_rate 5e-4\n```" in card
    assert f'AutoModelForCausalLM.from_pretrained("{REPO}")' in card


@pytest.mark.parametrize(
    ("algorithm", "url"),
    [
        ("ctwa", "2602.06869"),
        ("gradnorm", "1711.02257"),
        ("pama", "2508.07768"),
        ("dynamic", "2509.11452"),
        ("smooth_tchebycheff", "2402.19078"),
    ],
)
def test_card_links_the_algorithms_paper(tmp_path, algorithm, url):
    card = hub.render_model_card(_summary(algorithm=algorithm), REPO)
    assert f"https://huggingface.co/papers/{url}" in card
    assert f"- {algorithm}" in card  # tag


def test_card_of_an_adapter_and_of_a_run_without_summary(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    card = hub.write_model_card(tmp_path, {}, REPO, dataset="synthetic")
    front = _front_matter(card)
    assert front["library_name"] == "peft" and "lora" in front["tags"]
    assert "datasets" not in front  # a local/synthetic dataset is described in the text only
    assert "No `mo_summary.json` was found" in card
    assert "AutoPeftModelForCausalLM" in card
    assert not (tmp_path / "mo_weights.png").exists()  # nothing to plot


def test_card_redacts_tokens_in_the_launch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_FromTheEnvironment42")
    command = "mo-align train --config r.yaml --hub_token hf_OnTheCommandLine7 --note hf_FromTheEnvironment42"
    card = hub.write_model_card(tmp_path, _summary(launch_command=command), REPO, secrets=["xyzzy-secret"])
    assert "hf_OnTheCommandLine7" not in card and "hf_FromTheEnvironment42" not in card
    assert "--hub_token ***" in card
    assert hub.redact("token xyzzy-secret here", ["xyzzy-secret"]) == "token *** here"
    for harmless in ("--max_tokens 5 --token-env HF_TOKEN", "the per-token log-probabilities", "hf_short"):
        assert hub.redact(harmless) == harmless
    assert hub.redact("a -token x --token=y --hub-token z") == "a -token *** --token=*** --hub-token ***"


# ---- mo-align push -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A real finished tiny run: trained 2 steps with evaluations, model + tokenizer saved, mo_summary.json."""
    out = tmp_path_factory.mktemp("finished-run") / "run"
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(
            str(out),
            weighting="ctwa",
            eval_strategy="steps",
            eval_steps=1,
            eval_on_start=True,
            per_device_eval_batch_size=4,
            save_strategy="steps",
            save_steps=1,
        ),
        train_dataset=tiny_dataset(16),
        eval_dataset=tiny_dataset(4),
    )
    trainer.train()
    trainer.save_model(str(out))
    assert (out / "mo_summary.json").exists() and (out / "checkpoint-2").is_dir()
    return out


@pytest.fixture
def run_dir(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def test_push_uploads_model_tokenizer_and_card(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = FakeHfApi(tmp_path / "hub")
    rc = hub.main([str(run_dir), "--repo-id", REPO, "--private", "--dataset", "synthetic"], api=api)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"pushed {run_dir} to {REPO}" in out
    assert api.calls[0] == ("create_repo", {"repo_id": REPO, "token": SECRET, "private": True, "exist_ok": True})
    assert api.calls[1][0] == "upload_folder" and api.calls[1][1]["token"] == SECRET
    files = set(api.calls[1][1]["files"])
    for name in (
        "README.md",
        "mo_weights.png",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "mo_summary.json",
    ):
        assert name in files, name
    assert not any(f.startswith("checkpoint-") for f in files)  # optimizer states stay local
    card = (api.uploaded() / "README.md").read_text()
    summary = json.loads((run_dir / "mo_summary.json").read_text())
    assert "**ctwa**" in card
    for name in summary["objectives"]:
        row = f"| `{name}` | {summary['start'][name]:.4f} | {summary['final'][name]:.4f} |"
        assert row in card
    assert summary["launch_command"] in card
    assert (api.uploaded() / "mo_weights.png").read_bytes() == (run_dir / "mo_weights.png").read_bytes()


def test_push_never_prints_logs_or_writes_the_token(run_dir, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("MY_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    api = FakeHfApi(tmp_path / "hub")
    rc = hub.main([str(run_dir), "--repo-id", REPO, "--token-env", "MY_TOKEN"], api=api)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert api.calls[0][1]["token"] == SECRET  # it was used ...
    assert SECRET not in out + err + caplog.text  # ... and never shown
    for folder in (run_dir, api.uploaded()):
        for path in Path(folder).rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in (run_dir / "README.md").read_text()


def test_push_leaves_out_files_that_contain_the_token(run_dir, tmp_path, monkeypatch, capsys, caplog):
    # e.g. training_args.bin pickled by transformers with `hub_token` set in the recipe
    (run_dir / "training_args.bin").write_bytes(b"\x80\x04pickle..." + SECRET.encode() + b"...")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = FakeHfApi(tmp_path / "hub")
    with caplog.at_level(logging.WARNING, logger="mo_align.hub"):
        assert hub.main([str(run_dir), "--repo-id", REPO], api=api) == 0
    assert "training_args.bin" not in api.calls[1][1]["files"]
    assert "not uploading training_args.bin: it contains the Hub token" in caplog.text
    assert SECRET not in caplog.text + "".join(capsys.readouterr())


@pytest.mark.parametrize("stage", ["create_repo", "upload_folder"])
def test_failed_upload_keeps_every_local_file_and_exits_1(run_dir, tmp_path, monkeypatch, capsys, stage):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    before = _snapshot(run_dir)
    api = FakeHfApi(tmp_path / "hub", fail_on=stage, error=RuntimeError(f"401 Unauthorized (token {SECRET})"))
    rc = hub.main([str(run_dir), "--repo-id", REPO], api=api)
    out, err = capsys.readouterr()
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mo-align push: upload failed: RuntimeError: 401 Unauthorized (token ***)")
    assert "nothing local was deleted" in lines[0]
    assert SECRET not in out + err
    after = _snapshot(run_dir)
    for path, digest in before.items():  # every file is still there; only the card and its plot were (re)written
        assert path in after, path
        assert after[path] == digest or path in ("README.md", "mo_weights.png"), path
    assert set(after) - set(before) <= {"README.md", "mo_weights.png"}
    assert not api.uploaded().exists()


def test_failed_upload_with_the_real_client_offline(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    rc = hub.main([str(run_dir), "--repo-id", REPO])  # api=None: huggingface_hub.HfApi(), which refuses offline
    _, err = capsys.readouterr()
    assert rc == 1
    assert err.startswith("mo-align push: upload failed: OfflineModeIsEnabled:")
    assert SECRET not in err


def test_push_usage_errors(run_dir, tmp_path, capsys):
    assert hub.main([str(tmp_path / "missing"), "--repo-id", REPO], api=FakeHfApi(tmp_path)) == 2
    assert "is not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert hub.main([str(empty), "--repo-id", REPO], api=FakeHfApi(tmp_path)) == 2
    assert "holds no model weights" in capsys.readouterr().err
    assert hub.main([str(run_dir), "--repo-id", "a/b/c"], api=FakeHfApi(tmp_path)) == 2
    # the token is never a command-line value
    capsys.readouterr()
    assert hub.main([str(run_dir), "--repo-id", REPO, "--token", SECRET], api=FakeHfApi(tmp_path)) == 2
    assert hub.main([str(run_dir), "--repo-id", REPO, "--token-env", SECRET], api=FakeHfApi(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert "unrecognized arguments: --token ***" in err and "NAME of an environment variable" in err
    assert SECRET not in out + err
    assert hub.main(["--help"]) == 0


# ---- push_to_hub: true (transformers' own push) uploads mo_align's card ---------------------------------------------
class _CardTrainer(MOGRPOTrainer):
    """The ``create_model_card`` override proposed for ``MOGRPOTrainer`` (a no-op change once it is there)."""

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        hub.trainer_model_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)


def test_trainer_push_to_hub_uploads_the_mo_align_card(tiny_model_dir, tmp_path, monkeypatch, capsys, caplog):
    import transformers.utils.hub

    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.INFO)
    api = FakeHfApi(tmp_path / "hub")
    out = tmp_path / "run"
    with mock.patch.object(transformers.utils.hub, "_hf_api", api):
        trainer = _CardTrainer(
            model=tiny_model_dir,
            reward_funcs=[reward_has_digit, reward_short],
            args=tiny_config(
                str(out),
                weighting="linear",
                weighting_kwargs={"weights": [0.7, 0.3]},
                push_to_hub=True,
                hub_model_id=REPO,
                eval_strategy="steps",
                eval_steps=2,
                eval_on_start=True,
                per_device_eval_batch_size=4,
                save_strategy="steps",
                save_steps=2,
            ),
            train_dataset=tiny_dataset(16),
            eval_dataset=tiny_dataset(4),
        )
        trainer.train()  # hub_strategy every_save: the checkpoint push already carries the card
        trainer.push_to_hub(dataset_name="synthetic")
    uploads = [c for c in api.calls if c[0] == "upload_folder"]
    assert len(uploads) >= 2
    for _, call in uploads:
        assert {"README.md", "mo_weights.png"} <= set(call["files"])
    card = (api.uploaded() / "README.md").read_text()
    front = _front_matter(card)
    assert {"mo_align", "trl", "grpo", "multi-objective", "linear"} <= set(front["tags"])
    summary = trainer.summary()
    assert summary["final"] and summary["start"]
    for name in ("reward_has_digit", "reward_short"):
        assert f"| `{name}` | {summary['start'][name]:.4f} | {summary['final'][name]:.4f} |" in card
    assert "| `weights` | [0.7, 0.3] |" in card
    assert "## Dataset\n\n`synthetic`" in card
    assert "model.safetensors" in uploads[-1][1]["files"]
    assert (api.uploaded() / "mo_weights.png").exists()
    assert "TRL" in card and "## Interference\n\nVerdict: " in card
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text + card
    for path in out.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_hub_token_never_pickled_into_training_args(tmp_path):
    """transformers saves the args as training_args.bin in every checkpoint and uploads it with push_to_hub."""
    import pickle

    from mo_align.configs import MOGRPOConfig

    args = MOGRPOConfig(output_dir=str(tmp_path), use_cpu=True, hub_token="hf_SECRET123")
    assert b"hf_SECRET123" not in pickle.dumps(args)
    assert args.hub_token == "hf_SECRET123"  # the live object keeps it for the upload itself
