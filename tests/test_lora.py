"""LoRA (peft) with every weighting: only the adapters train, gradient-space Gram matrices use the adapters only,
the merged model saves and reloads; the tiny-lora recipes train end to end and push as an adapter."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings import WEIGHTINGS
from tests.helpers import reward_vowels, tiny_config, tiny_dataset


ROOT = pathlib.Path(__file__).resolve().parents[1]
LORA_RECIPES = sorted((ROOT / "recipes" / "tiny-lora").glob("*.yaml"))


def reward_first_token(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """A continuous reward of the first sampled token (so every group has variance and every gradient is non-zero)."""
    return [(ids[0] % 13) / 12.0 if ids else 0.0 for ids in completion_ids]


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _logits(model, tokenizer) -> torch.Tensor:
    enc = tokenizer("Compute 3 + 4. Step 1: 3+4=7.", return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.float()


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_lora_trains_only_adapters_with_every_weighting(name, tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_vowels, reward_first_token],
        args=tiny_config(str(tmp_path / "run"), weighting=name, max_steps=2),
        train_dataset=tiny_dataset(16),
        peft_config=lora_config(),
    )
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable), trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed, "no adapter parameter moved"
    assert changed <= trainable, f"frozen base weights changed: {sorted(changed - trainable)}"
    logged = [h for h in trainer.state.log_history if "mo/weight/reward_vowels" in h]
    assert len(logged) == 2 and all(f"rewards/{o}/mean" in h for h in logged for o in trainer.objective_names)

    if "gramian" in WEIGHTINGS[name].requires:
        # the parameter-space Gram matrix was computed (the parameter list is cached on first use) on the adapters
        params = trainer.mo_gradient.params
        assert params is not None, "the Gram matrix was never computed"
        ids = {id(p) for p in params}
        gram_names = {n for n, p in model.named_parameters() if id(p) in ids}
        assert gram_names == trainable

    # the merged model saves, reloads as a plain transformers model, and is not the base model
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    adapted = _logits(model, tokenizer)
    merged_dir = tmp_path / "merged"
    model.merge_and_unload().save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not any("lora_" in n for n, _ in reloaded.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged_logits = _logits(reloaded, tokenizer)
    torch.testing.assert_close(merged_logits, adapted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged_logits, _logits(base, tokenizer), atol=1e-5)


def test_gramian_params_regex_narrows_the_adapters(tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_vowels, reward_first_token],
        args=tiny_config(str(tmp_path), weighting="mgda", max_steps=1, gramian_params=r"v_proj\.lora_B"),
        train_dataset=tiny_dataset(8),
        peft_config=lora_config(),
    )
    params = trainer.mo_gradient.gram_params(trainer.model)
    names = {n for n, p in trainer.model.named_parameters() if any(p is q for q in params)}
    assert names and all("v_proj.lora_B" in n for n in names)


def test_tiny_lora_recipes_exist_and_ask_for_lora():
    from trl import get_peft_config

    from mo_align.train import parse_args

    stems = {p.stem for p in LORA_RECIPES}
    assert {"ctwa", "mgda"} <= stems
    for path in LORA_RECIPES:
        _, training_args, model_args = parse_args(["--config", str(path)])
        assert training_args.weighting == path.stem
        config = get_peft_config(model_args)
        assert isinstance(config, LoraConfig)
        assert config.r == 4 and set(config.target_modules) == {"q_proj", "v_proj"}
        assert training_args.gramian_params is None  # the Gram matrix defaults to the trainable (adapter) parameters


@pytest.mark.parametrize("name", ["ctwa", "mgda"])
def test_tiny_lora_recipe_trains_end_to_end_and_pushes_as_an_adapter(name, tiny_model_dir, tmp_path, monkeypatch):
    from mo_align import hub
    from mo_align.train import main, parse_args
    from tests.test_hub import FakeHfApi

    out = tmp_path / "run"
    overrides = [
        "--model_name_or_path",
        tiny_model_dir,
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--max_completion_length",
        "8",
    ]
    trainer = main(*parse_args(["--config", str(ROOT / "recipes" / "tiny-lora" / f"{name}.yaml"), *overrides]))
    assert trainer.weighting.name == name
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()  # only the adapter is saved
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}

    monkeypatch.setenv("HF_TOKEN", "hf_SECRET123")
    api = FakeHfApi(tmp_path / "hub")
    assert hub.main([str(out), "--repo-id", f"someone/tiny-lora-{name}"], api=api) == 0
    files = set(api.calls[-1][1]["files"])
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"} <= files
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "- lora" in card and f"**{name}**" in card
