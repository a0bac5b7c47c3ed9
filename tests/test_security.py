"""Files and strings from elsewhere never run code or leak secrets: a crafted ``mo_state.pt`` is refused unread, the
Hub token is refused in every command-line spelling and never reaches a file of the run, the model card shows user
strings as text only, and a recipe calls only declared reward factories with kwargs."""

import os
import pickle
import shutil

import pytest
import torch


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
