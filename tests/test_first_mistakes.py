"""The first mistakes a new user makes each print one line that says what to do, before the model loads: a model
path that is neither a local model nor reachable, data that cannot be downloaded."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import mo_align.trainer
from mo_align import train as train_mod
from tests.test_cli import tiny_recipe


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the model was loaded before the error was reported")

    monkeypatch.setattr(mo_align.trainer.MOGRPOTrainer, "__init__", fail)


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("mo-align: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def test_a_tiny_recipe_before_make_tiny_model_is_one_line_naming_the_fix(tmp_path):
    """As typed by a user in a fresh clone, offline: recipes/tiny/* point at outputs/tiny-model, which does not
    exist yet (it used to end in a 96-line Hub traceback after a minute)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "mo_align.train", "--config", str(ROOT / "recipes" / "tiny" / "linear.yaml")],
        cwd=tmp_path,  # no outputs/tiny-model here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert lines[-1].startswith("mo-align: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "'outputs/tiny-model'" in lines[-1] and "make tiny-model" in lines[-1]
    assert "HF_HUB_OFFLINE=1" in lines[-1]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("./no-such-model", "'./no-such-model': no such directory"),
        ("/abs/no/such/model", "no such directory"),
        ("some-org/some-model", "not a local directory and not in the Hugging Face cache while HF_HUB_OFFLINE=1"),
    ],
)
def test_missing_models_are_one_line_before_loading(tmp_path, capsys, no_model, model, message):
    recipe = tiny_recipe(tmp_path, model)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    line = _one_error_line(capsys)
    assert message in line and "make tiny-model" in line
    assert line.startswith(f"mo-align: error: {recipe}: model_name_or_path")


def test_a_directory_that_is_not_a_model_is_one_line(tmp_path, capsys, no_model):
    (tmp_path / "empty").mkdir()
    recipe = tiny_recipe(tmp_path, str(tmp_path / "empty"))
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", recipe])
    assert "a directory without config.json" in _one_error_line(capsys)


def test_an_unreachable_hub_model_online_is_one_line(tmp_path, monkeypatch):
    """Online, a Hub id is left to loading; a network or not-found error there becomes one line naming the id."""
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nand many more lines")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    _script_args, training_args, model_args = train_mod.parse_args(
        ["--config", tiny_recipe(tmp_path, "some-org/some-model")]
    )
    with pytest.raises(train_mod.ConfigError) as exc:
        train_mod.load_tokenizer(model_args, training_args)
    message = str(exc.value)
    assert "\n" not in message and "'some-org/some-model' could not be loaded (OSError: We couldn't connect" in message


def test_a_dataset_that_cannot_be_downloaded_is_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch, no_model):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/data' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, dataset_path=None, dataset_name="org/data")
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", recipe])
    line = _one_error_line(capsys)
    assert "dataset_name 'org/data' could not be loaded (ConnectionError: Couldn't reach" in line
