"""Checkpoints are intact or skipped, and a full disk is one line: a same-size corrupted ``model.safetensors`` (or a
broken safetensors header) is never resumed, and a save that runs out of space names the directory."""

from __future__ import annotations

import errno
import io
import json
import logging
import shutil

import pytest
import torch

from mo_align import checkpoints
from mo_align.checkpoints import MARKER, DiskFullError, last_complete_checkpoint
from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset


def _trainer(model_dir, out, **overrides):
    from mo_align.trainer import MOGRPOTrainer

    return MOGRPOTrainer(
        model=model_dir,
        reward_funcs=[reward_has_digit, reward_short],
        args=tiny_config(str(out), **overrides),
        train_dataset=tiny_dataset(16),
    )


@pytest.fixture(scope="module")
def two_checkpoints(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    _trainer(tiny_model_dir, out, max_steps=2, save_strategy="steps", save_steps=1).train()
    return out


@pytest.fixture
def run_copy(two_checkpoints, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    return out


def _overwrite(path, offset, data: bytes) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    assert path.stat().st_size == size  # same size: the old size-only check passed it


def test_the_manifest_records_a_sha256_of_every_file(two_checkpoints):
    import hashlib

    ckpt = two_checkpoints / "checkpoint-2"
    manifest = json.loads((ckpt / MARKER).read_text())
    assert manifest["version"] == 2 and set(manifest["sha256"]) == set(manifest["files"]) >= {"model.safetensors"}
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((ckpt / rel).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("damage", ["nan bytes mid-file", "broken header", "broken header, old manifest"])
def test_a_corrupted_model_is_skipped_naming_it_and_the_previous_checkpoint_resumes(
    tiny_model_dir, run_copy, caplog, damage
):
    """Before: a same-size corruption passed the size check; the run resumed it and died later on 'probability
    tensor contains inf/nan'."""
    ckpt, model = run_copy / "checkpoint-2", run_copy / "checkpoint-2" / "model.safetensors"
    assert last_complete_checkpoint(str(run_copy)) == (str(ckpt), [])  # intact (and now remembered as checked)
    if damage == "nan bytes mid-file":
        _overwrite(model, model.stat().st_size // 2, b"\xff" * 64)  # float32 NaNs inside a weight
        expected = f"{model} is corrupt: its SHA-256 differs from the one recorded when it was saved"
    else:
        _overwrite(model, 9, b"#garbage#")  # inside the JSON header
        expected = f"{model} is corrupt: its safetensors header is unreadable ("
        if damage.endswith("old manifest"):  # a version-1 manifest (sizes only): the header is still parsed
            manifest = json.loads((ckpt / MARKER).read_text())
            (ckpt / MARKER).write_text(json.dumps({"version": 1, "files": manifest["files"]}))
    newest, skipped = last_complete_checkpoint(str(run_copy))
    assert newest == str(run_copy / "checkpoint-1")
    assert [folder for folder, _ in skipped] == [str(ckpt)] and skipped[0][1].startswith(expected)

    trainer = _trainer(tiny_model_dir, run_copy, max_steps=2, save_strategy="no")
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        trainer.train(resume_from_checkpoint=True)
    lines = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"skipping corrupt checkpoint {ckpt}: {expected}")
    assert "\n" not in lines[0] and len(lines[0]) <= 400
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2]  # 1 restored, 2 trained again
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    again = _trainer(tiny_model_dir, run_copy / "again", max_steps=3)
    with pytest.raises(FileNotFoundError, match=f"{ckpt} is corrupt: "):
        again.train(resume_from_checkpoint=str(ckpt))  # named explicitly: refused
    assert again.state.global_step == 0


def test_an_intact_checkpoint_resumes(tiny_model_dir, run_copy, caplog):
    trainer = _trainer(tiny_model_dir, run_copy, max_steps=3, save_strategy="no")
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        trainer.train(resume_from_checkpoint=True)
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3]


# ---- a full disk ---------------------------------------------------------------------------------------------------
TORCH_FULL = "[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4374"
NO_EVAL = {"eval_strategy": "no", "eval_on_start": False}
SAFETENSORS_FULL = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'


@pytest.mark.parametrize(
    ("exc", "free", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 10**12, True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 10**12, True),
        (RuntimeError(SAFETENSORS_FULL), 10**12, True),
        (RuntimeError(TORCH_FULL), 4096, True),  # torch's stream writer carries no errno: the free space decides
        (RuntimeError(TORCH_FULL), 10**12, False),  # the same message with room left is some other failure
        (RuntimeError("CUDA error: an illegal memory access was encountered"), 0, False),
        (OSError(errno.EACCES, "Permission denied"), 0, False),
    ],
)
def test_disk_full_guard_turns_only_a_full_disk_into_one_line(monkeypatch, tmp_path, exc, free, full):
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: free)
    with (
        pytest.raises(DiskFullError if full else type(exc)) as info,
        checkpoints.disk_full_guard(str(tmp_path), "checkpoint-7"),
    ):
        raise exc
    if full:
        message = str(info.value)
        assert message.startswith(f"no space left on {tmp_path} ({free:,} bytes free) while writing checkpoint-7;")
        assert "\n" not in message and info.value.errno == errno.ENOSPC and info.value.__cause__ is exc
    else:
        assert info.value is exc


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_ignores_the_partial_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """Before: torch's 'basic_ios::clear / unexpected pos' traceback (68 lines), no directory named."""
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if "checkpoint-2" in str(path) and str(path).endswith("optimizer.pt"):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            with open(path, "wb") as f:  # half of it reached the disk
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise RuntimeError(TORCH_FULL)
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 0)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=3, save_strategy="steps", save_steps=1, **NO_EVAL)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe, "--log_level", "error", "--disable_tqdm", "true"])
    assert exc.value.code == 1
    out = tmp_path / "out"
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [
        f"mo-align: error: no space left on {out} (0 bytes free) while writing {out / 'checkpoint-2'}; a "
        "half-written checkpoint is skipped on resume: free space and rerun to resume from the newest complete "
        "checkpoint"
    ]
    assert (out / "checkpoint-2" / "optimizer.pt").exists() and not (out / "checkpoint-2" / MARKER).exists()
    newest, skipped = last_complete_checkpoint(str(out))
    assert newest == str(out / "checkpoint-1") and [s[0] for s in skipped] == [str(out / "checkpoint-2")]
    assert not (out / "model.safetensors").exists()


def test_a_full_disk_while_saving_the_final_model_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import transformers.modeling_utils

    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)  # what save_pretrained calls
    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=1, **NO_EVAL)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe, "--log_level", "error", "--disable_tqdm", "true"])
    assert exc.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mo-align: error: no space left on {tmp_path / 'out'} (") and "the final model" in line
