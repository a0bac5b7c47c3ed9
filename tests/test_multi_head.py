"""MultiHeadRewardModel: K named rewards from one K-label classifier, one forward per batch."""

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

from mo_align.rewards.multi_head import MultiHeadRewardModel


HEADS = ["helpful", "harmless", "honest"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def classifier(tokenizer, num_labels=3):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForSequenceClassification(config).eval()


def count_forwards(model):
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls


PROMPTS = [[{"role": "user", "content": f"Compute {i} + {i + 1}."}] for i in range(4)]
COMPLETIONS = [[{"role": "assistant", "content": "The answer is " + "1" * (i + 1) + "."}] for i in range(4)]


def test_k_rewards_share_one_forward_and_match_a_direct_forward(tokenizer):
    model = classifier(tokenizer)
    calls = count_forwards(model)
    rm = MultiHeadRewardModel(model, tokenizer, HEADS)
    funcs = rm.reward_funcs()
    assert [f.__name__ for f in funcs] == HEADS
    assert not any(isinstance(f, torch.nn.Module) for f in funcs)  # TRL must call them as functions

    got = [f(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=None) for f in funcs]
    assert len(calls) == 1 and rm.forward_count == 1

    # direct forward of each sample alone (no padding at all)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        text = tokenizer.apply_chat_template(p + c, tokenize=False)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            want = model(**enc).logits[0]
        for k in range(len(HEADS)):
            assert got[k][i] == pytest.approx(want[k].item(), abs=1e-5)
    # the heads differ (a real K-output model, not one logit K times)
    assert got[0] != got[1] != got[2]


def test_new_batch_new_forward_same_batch_cached(tokenizer):
    model = classifier(tokenizer)
    calls = count_forwards(model)
    rm = MultiHeadRewardModel(model, tokenizer, HEADS)
    funcs = rm.reward_funcs()
    first = [f(PROMPTS, COMPLETIONS) for f in funcs]
    second = [f(PROMPTS[:2], COMPLETIONS[:2]) for f in funcs]
    assert len(calls) == 2
    assert torch.allclose(torch.tensor(second), torch.tensor([f[:2] for f in first]), atol=1e-5)
    [f(PROMPTS[:2], COMPLETIONS[:2]) for f in funcs]
    assert len(calls) == 2  # the same batch again: cached


def test_standard_text_samples_and_chunked_forward(tokenizer):
    model = classifier(tokenizer)
    calls = count_forwards(model)
    prompts = ["Compute 1 + 2.", "Compute 3 + 4.", "Compute 5 + 6."]
    completions = [" 3", " 7 because 3 + 4 = 7", " 11"]
    rm = MultiHeadRewardModel(model, tokenizer, HEADS, batch_size=2)
    scores = rm.scores(prompts, completions)
    assert scores.shape == (3, 3) and len(calls) == 2  # chunks of 2: two forwards for the whole batch
    for i in range(3):
        enc = tokenizer(prompts[i] + completions[i], return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).logits[0]
        assert torch.allclose(scores[i], want, atol=1e-5)


def test_validation(tokenizer):
    with pytest.raises(ValueError, match="num_labels=2"):
        MultiHeadRewardModel(classifier(tokenizer, num_labels=2), tokenizer, HEADS)
    with pytest.raises(ValueError, match="distinct"):
        MultiHeadRewardModel(classifier(tokenizer), tokenizer, ["a", "a", "b"])
    rm = MultiHeadRewardModel(classifier(tokenizer), tokenizer, HEADS)
    assert rm.reward_funcs()[0]([], []) == []
