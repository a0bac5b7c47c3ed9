"""Build a tiny, random, fully offline chat model for tests and smoke runs.

``make_tiny_model`` writes a Hugging Face model directory containing a byte-level BPE tokenizer trained in-process on a
synthetic arithmetic corpus (ChatML chat template, left padding) and a randomly initialised ``Qwen2ForCausalLM``. The
output depends only on the seed and the overrides, so tests can rebuild it anywhere without network access. Its head
dimension is kept at 32 or more so that a vLLM CPU server can also serve it.

Command line (used by ``make tiny-model``)::

    python -m mo_align.testing --out DIR [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from mo_align.cli import CommandParser, run_module


__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "make_tiny_model"]

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, "<|im_start|>", EOS_TOKEN]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MIN_HEAD_DIM = 32
_MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens
_CORPUS_SIZE = 4000
_WORDS = (  # plain English filler, split into words by _corpus
    "the a an is of and to in it that for on with as was are be this by at or from but not what which all were when "
    "we there can your how said each she do has more her two like him see time could no make than first been its "
    "who now people my made over did down only way find use may water long little very after words called just "
    "where most know number step then answer boxed compute calculate sum total result add subtract multiply"
)
_MODEL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "dtype": "float32",
}


def _apply(op: str, x: int, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def _corpus(seed: int, size: int = _CORPUS_SIZE) -> list[str]:
    """Deterministic synthetic texts: arithmetic prompts, worked answers and plain English."""
    rng = random.Random(seed)
    words = _WORDS.split()
    texts: list[str] = []
    for _ in range(size):
        a, b, c = rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 9)
        op1, op2 = rng.choice("+-*"), rng.choice("+-")
        r1 = _apply(op1, a, b)
        r2 = _apply(op2, r1, c)
        kind = rng.randrange(5)
        if kind == 0:
            verb = rng.choice(("Compute", "Calculate", "What is"))
            end = "?" if verb == "What is" else "."
            texts.append(f"{verb} {a} {op1} {b} {op2} {c}{end}")
        elif kind == 1:
            texts.append(f"Step 1: {a}{op1}{b}={r1}.\nStep 2: {r1}{op2}{c}={r2}.\nSo the answer is \\boxed{{{r2}}}.")
        elif kind == 2:
            texts.append(f"First, {a} {op1} {b} = {r1}. Then, {r1} {op2} {c} = {r2}. The answer is \\boxed{{{r2}}}.")
        elif kind == 3:
            texts.append(f"The answer is \\boxed{{{r1}}}.")
        else:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
            texts.append(sentence[0].upper() + sentence[1:] + ".")
    return texts


def _train_tokenizer(seed: int, vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _config_fields(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with ``overrides``, validated before anything is trained or written."""
    reference = Qwen2Config()
    unknown = sorted(key for key in overrides if not hasattr(reference, key))
    if unknown:
        raise ValueError(f"unknown Qwen2Config field(s) in overrides: {', '.join(unknown)}")
    fields = {**_MODEL_DEFAULTS, **overrides}
    head_dim = fields["hidden_size"] // fields["num_attention_heads"]
    if head_dim < MIN_HEAD_DIM:
        raise ValueError(
            f"head_dim = hidden_size // num_attention_heads = {fields['hidden_size']} // "
            f"{fields['num_attention_heads']} = {head_dim} must be >= {MIN_HEAD_DIM} (needed by vLLM's CPU backend)"
        )
    if fields["num_attention_heads"] % fields["num_key_value_heads"]:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    return fields


def make_tiny_model(output_dir: str | os.PathLike, seed: int = 0, *, vocab_size: int = 384, **overrides: Any) -> str:
    """Write a tiny random Qwen2 chat model and its tokenizer to ``output_dir`` and return the path.

    Args:
        output_dir: Directory to write to (created if needed).
        seed: Seeds both the tokenizer's training corpus and the model's initial weights; the same seed always gives
            a byte-identical ``tokenizer.json`` and bitwise-identical weights.
        vocab_size: Target vocabulary size of the BPE tokenizer (at least 260: 256 bytes plus 4 special tokens). The
            model's vocabulary is the tokenizer's actual length.
        **overrides: ``Qwen2Config`` fields replacing the defaults, e.g. ``hidden_size=128, num_hidden_layers=4``.

    Raises:
        ValueError: if the head dimension would be below 32, ``vocab_size`` is too small, or an override is not a
            ``Qwen2Config`` field.

    The caller's global torch RNG state is left untouched.
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {_MIN_VOCAB_SIZE}, got {vocab_size}")
    fields = _config_fields(overrides)
    tokenizer = _train_tokenizer(seed, vocab_size)
    token_ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS_TOKEN),
    }
    config = Qwen2Config(**{**token_ids, **fields})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    # safetensors is the only format in transformers >= 5; the flag keeps 4.x on it too.
    model.save_pretrained(output_dir, safe_serialization=True)
    return str(output_dir)


def add_parser(subparsers: Any) -> CommandParser:
    """``python -m mo_align.testing`` (``make tiny-model``)."""
    parser = subparsers.add_parser("testing", description=__doc__.splitlines()[0], exits=True)
    parser.add_argument("--out", required=True, help="directory to write the model and tokenizer to")
    parser.add_argument("--seed", type=int, default=0, help="seed for the tokenizer corpus and the weights")
    return parser


def run(args: argparse.Namespace) -> None:
    sys.stdout.write(make_tiny_model(args.out, seed=args.seed) + "\n")


def _main(argv: list[str] | None = None) -> None:
    run_module(add_parser, run, argv, "python -m mo_align.testing")


if __name__ == "__main__":
    _main()
