"""Tests for mo_align.testing.make_tiny_model (the offline tiny chat model)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from mo_align.testing import _corpus, make_tiny_model


REPO_ROOT = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "Compute 1 + 2."}]
EXPECTED_PROMPT = "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    assert make_tiny_model(out) == str(out)
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_reloads_with_auto_classes(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert prompt == EXPECTED_PROMPT
    no_gen = tokenizer.apply_chat_template([*CHAT, {"role": "assistant", "content": "3"}], tokenize=False)
    assert no_gen == "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left"
    for special in ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(special, add_special_tokens=False)) == 1
    config = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.max_position_embeddings) == (2, 1, 512)
    assert config.hidden_size // config.num_attention_heads >= 32
    assert config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    assert config.vocab_size == len(tokenizer) == 384
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.bos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    generation = model.generation_config
    assert (generation.pad_token_id, generation.eos_token_id, generation.bos_token_id) == (
        config.pad_token_id,
        config.eos_token_id,
        config.bos_token_id,
    )
    assert (tiny_dir / "model.safetensors").is_file()


def test_same_seed_is_identical_and_other_seed_differs(tiny_dir: Path, tmp_path: Path) -> None:
    again = Path(make_tiny_model(tmp_path / "again", seed=0))
    assert (again / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    first, second = _weights(tiny_dir), _weights(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = _weights(Path(make_tiny_model(tmp_path / "other", seed=1)))
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    assert not torch.equal(first["model.layers.0.mlp.up_proj.weight"], other["model.layers.0.mlp.up_proj.weight"])


def test_cli_in_fresh_process_matches(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "123"}
    result = subprocess.run(
        [sys.executable, "-m", "mo_align.testing", "--out", str(out), "--seed", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (out / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    assert (out / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()


def test_digits_split_words_merge_and_round_trip(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert len(tokenizer.encode("123", add_special_tokens=False)) == 3
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("2025", add_special_tokens=False)) == ["2", "0", "2", "5"]
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))  # what transformers 4.x and vLLM would load as is
    assert raw.encode("123", add_special_tokens=False).tokens == ["1", "2", "3"]
    assert raw.encode(" 2025", add_special_tokens=False).tokens == ["\u0120", "2", "0", "2", "5"]
    vocab = tokenizer.get_vocab()
    for word in ("Step", "First", "\u0120Then", "\u0120answer", "boxed"):  # \u0120 is byte-level BPE's space
        assert word in vocab, word
    text = "Step 1: 3+4=7.\nStep 2: 7-2=5.\nSo the answer is \\boxed{5}."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())


def test_auto_tokenizer_matches_saved_tokenizer_json(tiny_dir: Path) -> None:
    # transformers 5 rebuilds Qwen2Tokenizer's pre-tokenizer from its own regex instead of reading tokenizer.json;
    # both must still give the same ids, or vLLM/tokenizers users and the trainer would disagree.
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(tiny_dir)
    texts = [*_corpus(seed=7, size=500), EXPECTED_PROMPT, "Hello,  world!\n\n(First) it's 12.5%\tdone"]
    for text in texts:
        assert auto.encode(text, add_special_tokens=False) == raw.encode(text, add_special_tokens=False).ids, text


def test_generate_sampling_on_left_padded_chat_batch(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompts = [
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        for chat in (CHAT, [{"role": "user", "content": "Compute 12 + 34 - 5. Think step by step."}])
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (batch["input_ids"][0, 0] == tokenizer.pad_token_id).item()  # the shorter prompt is padded on the left
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=True)
    width = batch["input_ids"].shape[1]
    assert out.shape == (2, width + 8)
    assert torch.equal(out[:, :width], batch["input_ids"])
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(out[:, width:]))


def test_global_torch_rng_untouched(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    make_tiny_model(tmp_path / "rng", seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_overrides_apply(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "big", hidden_size=128, num_hidden_layers=4, num_attention_heads=4)
    config = AutoModelForCausalLM.from_pretrained(path).config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (128, 4, 4)
    assert config.intermediate_size == 128


@pytest.mark.parametrize(
    "overrides",
    [{"hidden_size": 32}, {"num_attention_heads": 4}, {"hidden_size": 96, "num_attention_heads": 4}],
)
def test_small_head_dim_rejected(tmp_path: Path, overrides: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"hidden_size|num_attention_heads"):
        make_tiny_model(tmp_path / "bad", **overrides)
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_bad_arguments_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hidden_szie"):
        make_tiny_model(tmp_path / "typo", hidden_szie=128)
    with pytest.raises(ValueError, match="vocab_size"):
        make_tiny_model(tmp_path / "tiny_vocab", vocab_size=100)
