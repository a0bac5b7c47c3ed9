"""A DeepSpeed run after an interrupted one: a stale torch extension build lock is named in one line, and on the CPU
the communication op that used to be built under such a lock is not built at all (mo_align.deepspeed_setup)."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mo_align.cli import main as cli_main
from mo_align.deepspeed_setup import (
    ExtensionLockError,
    check_extension_locks,
    extensions_root,
    stale_locks,
)
from mo_align.process_group import run_group
from tests.test_cli import tiny_recipe


ROOT = Path(__file__).resolve().parents[1]
ZERO3_JSON = ROOT / "configs" / "deepspeed" / "zero3.json"


def _plant(root: Path, name: str = "deepspeed_shm_comm", age_s: float = 120.0) -> Path:
    """A lock as a killed build leaves it: FileBaton's file, created long ago, open in no process."""
    (root / name).mkdir(parents=True, exist_ok=True)
    lock = root / name / "lock"
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


@pytest.fixture
def ext_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "torch_extensions"
    root.mkdir()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    return root


def test_the_root_is_torchs(monkeypatch, tmp_path):
    from torch.utils.cpp_extension import get_default_build_root

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert extensions_root() == Path(get_default_build_root())


def test_a_stale_lock_is_named_in_one_line(ext_root):
    lock = _plant(ext_root)
    with pytest.raises(ExtensionLockError) as exc:
        check_extension_locks()
    message = str(exc.value)
    assert message == (
        "stale torch extension build lock: no process holds it (a killed build left it) and DeepSpeed would wait on "
        f"it forever; remove it: rm {lock}"
    )
    assert len(message) - len(str(lock)) < 150
    lock.unlink()
    check_extension_locks()  # removed as told: the run starts


def test_locks_in_use_or_just_released_are_not_stale(ext_root):
    """A build in progress keeps FileBaton's descriptor open: never stale, however old. A lock younger than
    LOCK_MIN_AGE_S may be between the holder's close and remove: not reported either."""
    held = _plant(ext_root, "cpu_adam")
    fd = os.open(held, os.O_RDONLY)  # this process is "building cpu_adam"
    try:
        young = _plant(ext_root, "fused_adam", age_s=0.0)
        assert stale_locks() == []
        check_extension_locks()
        old = _plant(ext_root / "py311_cpu", "deepspeed_shm_comm")  # torch's default layout, one level deeper
        assert stale_locks() == [old]
        assert stale_locks(min_age_s=0.0) == sorted([old, young])
    finally:
        os.close(fd)
    assert stale_locks() == sorted([held, old])
    with pytest.raises(ExtensionLockError, match=rf"rm {held} \(1 more under {ext_root}\)$"):
        check_extension_locks()


def test_config_and_cli_refuse_a_stale_lock_before_anything_runs(ext_root, tmp_path, tiny_model_dir, capsys):
    """MOGRPOConfig(deepspeed=...) (every rank, also under `accelerate launch` with a DeepSpeed config) and
    `mo-align train --accelerate_config zero3` (before launching) stop on the planted lock."""
    from mo_align.configs import MOGRPOConfig

    lock = _plant(ext_root)
    with pytest.raises(ExtensionLockError, match=f"remove it: rm {lock}$"):
        MOGRPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True, deepspeed=str(ZERO3_JSON), report_to="none")
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    assert cli_main(["train", "--config", recipe, "--accelerate_config", "zero3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mo-align: error: stale torch extension build lock: "), err
    assert err[0].endswith(f"remove it: rm {lock}")


_INIT = """
import sys
from mo_align.configs import MOGRPOConfig

MOGRPOConfig(output_dir=sys.argv[1], use_cpu=True, deepspeed=sys.argv[2], report_to="none")
from deepspeed.comm import comm

comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)  # DeepSpeed's torch backend starts here
print("shm_comm_op", comm.cdb.shm_comm_op, flush=True)
"""


def test_deepspeed_on_cpu_builds_no_comm_op(ext_root, tmp_path):
    """Before: DeepSpeed's torch backend built deepspeed_shm_comm on every CPU run, and waited on its lock for as
    long as any other process held it (forever after a killed build: this test timed out). Now the op is not built:
    the backend starts while another process holds the lock, and the build directory stays empty."""
    lock = _plant(ext_root)
    fd = os.open(lock, os.O_RDONLY)  # a build "in progress" in this process: not stale, and never finished
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DS_ACCELERATOR": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        **{"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"},
        **{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
    }
    cmd = [sys.executable, "-c", textwrap.dedent(_INIT), str(tmp_path / "out"), str(ZERO3_JSON)]
    try:
        proc = run_group(cmd, 240, env=env, capture_output=True, text=True)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shm_comm_op None" in proc.stdout.splitlines(), proc.stdout[-2000:]
    assert sorted(os.listdir(lock.parent)) == ["lock"]  # nothing was built
