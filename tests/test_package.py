"""The package's public API and its size rules (issue "house")."""

import subprocess
import sys
from pathlib import Path

import mo_align


ROOT = Path(__file__).resolve().parents[1]


def test_public_api_resolves():
    from mo_align.trainer import MOGRPOTrainer
    from mo_align.weightings import WEIGHTINGS, Weighting

    for name in mo_align.__all__:
        assert getattr(mo_align, name) is not None, name
    assert mo_align.MOGRPOTrainer is MOGRPOTrainer and mo_align.Weighting is Weighting
    assert mo_align.WEIGHTINGS is WEIGHTINGS and set(WEIGHTINGS) >= {"linear", "ctwa", "mgda", "dynamic"}


def test_importing_the_package_stays_light():
    """The vLLM server imports mo_align.vllm.plugin: the package root must not pull torch or TRL."""
    code = "import sys, mo_align; print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_size_rules_hold():
    """No module of mo_align over 400 lines, no function over 60 (scripts/size_check.py, also run by make lint)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "size_check.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
