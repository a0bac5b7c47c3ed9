"""``mo-align train --accelerate_config`` starts ``accelerate launch`` as ``trl grpo`` does; ``mo-align lab``,
``mo-align data math500``, ``mo-align env``; the typed command."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import types

import pytest
import yaml

from mo_align import extras
from mo_align.cli import main as cli_main
from mo_align.launch import LaunchError, accelerate_command, typed_command
from mo_align.process_group import run_group
from tests.test_cli import tiny_recipe


ROOT = pathlib.Path(__file__).resolve().parents[1]
# the launch configs are package data; the repository's configs/ links to this folder
CONFIGS = ROOT / "mo_align" / "resources" / "configs"
TRL_NAMES = ["single_gpu", "multi_gpu", "zero1", "zero2", "zero3", "fsdp1", "fsdp2"]  # trl/accelerate_configs
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


@pytest.mark.parametrize(("name", "file"), [("ddp", "ddp"), ("multi_gpu", "ddp"), ("cpu", "cpu")])
def test_named_configs_build_the_accelerate_command(tmp_path, name, file):
    command, shown = accelerate_command(
        ["--config", "r.yaml", "--accelerate_config", name, "--num_processes", "2", "--learning_rate", "1e-3"],
        tmp_path,
    )
    tail = ["--config_file", str(CONFIGS / "accelerate" / f"{file}.yaml"), "--num_processes", "2"]
    tail += ["-m", "mo_align.train", "--config", "r.yaml", "--learning_rate", "1e-3"]
    assert command == [*LAUNCH, *tail] and shown == ["accelerate", "launch", *tail]


def test_a_file_and_inline_values(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: 'NO'\nuse_cpu: true\n")
    command, _ = accelerate_command([f"--accelerate_config={own}", "--config", "r.yaml"], tmp_path)
    assert command == [*LAUNCH, "--config_file", str(own), "-m", "mo_align.train", "--config", "r.yaml"]
    assert accelerate_command(["--config", "r.yaml"], tmp_path) is None  # no launcher: train in this process


def test_zero3_points_at_its_deepspeed_json_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs/deepspeed/zero3.json is relative to the repository, not to here
    command, _ = accelerate_command(["--accelerate_config", "zero3", "--config", "r.yaml"], tmp_path)
    written = pathlib.Path(command[command.index("--config_file") + 1])
    assert written.parent == tmp_path
    config = yaml.safe_load(written.read_text())
    assert config["deepspeed_config"]["deepspeed_config_file"] == str(CONFIGS / "deepspeed" / "zero3.json")
    original = yaml.safe_load((CONFIGS / "accelerate" / "zero3.yaml").read_text())
    assert {k: v for k, v in config.items() if k != "deepspeed_config"} == {
        k: v for k, v in original.items() if k != "deepspeed_config"
    }


def test_the_repository_configs_link_to_the_package_data():
    assert (ROOT / "configs").resolve() == CONFIGS.resolve()
    assert sorted(p.name for p in (ROOT / "configs" / "accelerate").glob("*.yaml")) == sorted(
        p.name for p in (CONFIGS / "accelerate").glob("*.yaml")
    )


@pytest.mark.parametrize("name", TRL_NAMES)
def test_every_trl_accelerate_config_name_resolves_and_parses(tmp_path, monkeypatch, name):
    """TRL's names launch as with ``trl grpo --accelerate_config NAME``: accelerate's own loader reads the file, a
    DeepSpeed config's JSON exists and holds the stage its name says, from a directory outside the repository."""
    from accelerate.commands.config.config_args import load_config_from_file

    monkeypatch.chdir(tmp_path)
    command, _ = accelerate_command(["--accelerate_config", name, "--config", "r.yaml"], tmp_path)
    path = command[command.index("--config_file") + 1]
    config = load_config_from_file(path)
    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU"}.get(name, "DEEPSPEED" if "zero" in name else "FSDP")
    assert config.distributed_type.value == expected
    if expected == "DEEPSPEED":
        ds_file = pathlib.Path(config.deepspeed_config["deepspeed_config_file"])
        assert ds_file.is_absolute() and ds_file.is_file()
        assert json.loads(ds_file.read_text())["zero_optimization"]["stage"] == int(name[-1])
    if expected == "FSDP":
        assert config.fsdp_config["fsdp_version"] == int(name[-1])


def test_bad_launch_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys):
    assert cli_main(["train", "--config", "r.yaml", "--accelerate_config", "tpu"]) == 2
    names = ["cpu", "ddp", "fsdp1", "fsdp2", "multi_gpu", "single_gpu", "zero1", "zero2", "zero3"]
    assert f"--accelerate_config 'tpu': no such file; use one of {names}" in capsys.readouterr().err
    with pytest.raises(LaunchError, match="--num_processes needs --accelerate_config"):
        accelerate_command(["--config", "r.yaml", "--num_processes", "2"], tmp_path)
    monkeypatch.setattr(extras, "is_installed", lambda module: module != "deepspeed")
    assert cli_main(["train", "--config", "r.yaml", "--accelerate_config", "zero3"]) == 2
    assert "pip install 'mo_align[deepspeed]'" in capsys.readouterr().err


def test_train_under_accelerate_launch_with_the_cpu_config(tmp_path, tiny_model_dir):
    """A real run: `mo-align train --accelerate_config cpu` trains through accelerate and records what was typed."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=1, eval_strategy="no", eval_on_start=False)
    console = pathlib.Path(sys.executable).parent / "mo-align"
    args = ["train", "--config", recipe, "--accelerate_config", "cpu", "--disable_tqdm", "true"]
    env = {**os.environ, "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}  # never a user's default config
    proc = run_group([str(console), *args], 300, capture_output=True, text=True, env=env)  # accelerate's rank too
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"mo-align: accelerate launch --config_file {CONFIGS}/accelerate/cpu.yaml -m mo_align.train" in (
        proc.stderr
    )
    summary = json.loads((tmp_path / "out" / "mo_summary.json").read_text())
    assert summary["launch_command"] == "mo-align " + " ".join(args)
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_typed_command_forms(monkeypatch):
    monkeypatch.delenv("MO_ALIGN_TYPED_COMMAND", raising=False)
    module = types.SimpleNamespace(__spec__=types.SimpleNamespace(name="mo_align.lab.__main__"))
    python = os.path.basename(sys.executable)
    assert typed_command(["/x/mo_align/lab/__main__.py", "--quick"], module) == f"{python} -m mo_align.lab --quick"
    script = types.SimpleNamespace(__spec__=None)
    assert typed_command(["/venv/bin/mo-align", "train", "--config", "a b.yaml"], script) == (
        "mo-align train --config 'a b.yaml'"
    )
    assert typed_command(["bench/run.py"], script) == f"{python} bench/run.py"


def test_env_lab_and_data_commands(capsys):
    assert cli_main(["env"]) == 0
    out = capsys.readouterr().out
    import torch
    import trl

    assert "- torch:" in out and torch.__version__ in out and f"{trl.__version__}" in out
    assert "- deepspeed:" in out and "- cuda:" in out
    with pytest.raises(SystemExit) as exc:
        cli_main(["lab", "--help"])
    assert exc.value.code == 0 and "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main(["data", "math500", "--help"])
    assert exc.value.code == 0 and "--out" in capsys.readouterr().out
    assert cli_main(["data", "gsm8k"]) == 2
