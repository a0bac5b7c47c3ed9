"""Every model argument TRL's ``trl grpo`` script forwards reaches ``from_pretrained``."""

from __future__ import annotations

import pytest
import torch
import transformers

from mo_align import extras
from mo_align import train as train_mod
from tests.test_cli import tiny_recipe


class _Loaded(Exception):
    """Stops the run once the model's from_pretrained was called (nothing after it is under test here)."""


@pytest.fixture
def recorded(monkeypatch):
    calls: dict[str, dict] = {}
    model_cls = transformers.Qwen2ForCausalLM  # the tiny model's architecture, as TRL resolves it from its config
    tok_from_pretrained = transformers.AutoTokenizer.from_pretrained

    def model_from_pretrained(cls, path, *a, **kwargs):
        calls["model"] = kwargs
        raise _Loaded

    def tokenizer_from_pretrained(path, *a, **kwargs):
        calls["tokenizer"] = kwargs
        return tok_from_pretrained(path, *a, **kwargs)

    monkeypatch.setattr(model_cls, "from_pretrained", classmethod(model_from_pretrained))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from_pretrained)
    return calls


def _run(tmp_path, model_dir, *flags: str) -> None:
    recipe = tiny_recipe(tmp_path, model_dir)
    with pytest.raises(_Loaded):
        train_mod.main(*train_mod.parse_args(["--config", recipe, *flags]))


def test_model_arguments_reach_from_pretrained(tmp_path, tiny_model_dir, recorded):
    _run(tmp_path, tiny_model_dir, "--model_revision", "v1.0", "--trust_remote_code", "true",
         "--attn_implementation", "eager", "--dtype", "bfloat16")  # fmt: skip
    model = recorded["model"]
    assert model["revision"] == "v1.0"
    assert model["trust_remote_code"] is True
    assert model["attn_implementation"] == "eager"
    assert model["dtype"] is torch.bfloat16  # TRL maps the string to the torch dtype
    assert "quantization_config" not in model
    assert recorded["tokenizer"]["revision"] == "v1.0"
    assert recorded["tokenizer"]["trust_remote_code"] is True


def test_defaults_are_trls(tmp_path, tiny_model_dir, recorded):
    _run(tmp_path, tiny_model_dir)
    model = recorded["model"]
    assert (model["revision"], model["trust_remote_code"], model["attn_implementation"]) == ("main", False, None)
    assert model["dtype"] is torch.float32  # the tiny recipe says float32


def test_recipe_model_init_kwargs_take_precedence(tmp_path, tiny_model_dir, recorded):
    _run(tmp_path, tiny_model_dir, "--attn_implementation", "eager", "--model_init_kwargs",
         '{"attn_implementation": "sdpa", "low_cpu_mem_usage": true}')  # fmt: skip
    assert recorded["model"]["attn_implementation"] == "sdpa"
    assert recorded["model"]["low_cpu_mem_usage"] is True


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantization_reaches_from_pretrained(tmp_path, tiny_model_dir, recorded, monkeypatch, flag):
    monkeypatch.setattr(extras, "is_installed", lambda module: True)  # bitsandbytes is not part of the CPU set
    _run(tmp_path, tiny_model_dir, flag, "true", "--dtype", "bfloat16")
    config = recorded["model"]["quantization_config"]
    assert isinstance(config, transformers.BitsAndBytesConfig)
    if flag == "--load_in_4bit":
        assert config.load_in_4bit and not config.load_in_8bit
        assert config.bnb_4bit_compute_dtype == torch.bfloat16 and config.bnb_4bit_quant_type == "nf4"
    else:
        assert config.load_in_8bit and not config.load_in_4bit


def test_quantization_without_bitsandbytes_names_the_extra(tmp_path, tiny_model_dir, recorded, monkeypatch, capsys):
    monkeypatch.setattr(extras, "is_installed", lambda module: module != "bitsandbytes")
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe, "--load_in_4bit", "true"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == "mo-align: error: load_in_4bit needs the 'bitsandbytes' package: pip install 'mo_align[quantization]'"
    )
    assert "model" not in recorded
