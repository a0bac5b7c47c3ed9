"""scripts/layer_check.py (run by ``make lint``): the package holds its layers, and the checker finds each kind of
violation in small packages written here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "layer_check.py"


def run_check(*roots: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, str(CHECK), *map(str, roots)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.stderr == "", proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package named ``mo_align`` (the checker's layers are named after it) under ``root``; every directory of a
    file gets an ``__init__.py`` unless one is given."""
    package = root / "mo_align"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for directory in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return package


def test_the_package_has_no_violation():
    rc, lines = run_check()
    assert rc == 0, "\n".join(lines)
    assert ": 0 violation(s), " in lines[-1], lines[-1]
    exempt = lines[:-1]
    # the allowlist covers the two modules a parallel change rewrites (their in-function imports), and nothing else
    assert all(
        line.startswith(("exempt (nested: mo_align.cli ", "exempt (nested: mo_align.sweep.spec ")) for line in exempt
    )


def test_a_clean_package_passes(tmp_path):
    package = write_package(
        tmp_path,
        {
            "configs.py": "import json\n\nfrom mo_align import text\n",
            "text.py": "NAME = 'x_state.pt'\n",
            "lab/run.py": (
                "from mo_align.configs import json\n\n\n"
                "def f():\n    import deepspeed  # optional extra: deepspeed\n"
                "    # lazy: the trainer loads in the workers only\n    from mo_align import configs\n"
            ),
        },
    )
    rc, lines = run_check(package)
    assert (rc, lines) == (0, [f"layer check of {package}: 0 violation(s), 0 exempt"])


def test_a_cycle_is_reported_also_through_an_in_function_import_and_a_parent_package(tmp_path):
    package = write_package(
        tmp_path,
        {
            "a.py": "from mo_align import b\n",
            "b.py": "def f():\n    from mo_align import a  # lazy: hides the cycle, which still counts\n",
            # q.m imports p.n: Python runs p/__init__.py first, which imports q.m
            "p/__init__.py": "from mo_align.q import m\n",
            "p/n.py": "X = 1\n",
            "q/m.py": "from mo_align.p.n import X\n",
            "typed.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from mo_align import untyped\n",
            "untyped.py": "from mo_align import typed\n",
        },
    )
    rc, lines = run_check(package)
    assert rc == 1
    assert "cycle: mo_align.a (line 1) -> mo_align.b (line 2) -> mo_align.a" in lines
    assert "cycle: mo_align.p (line 1) -> mo_align.q.m (line 1) -> mo_align.p" in lines
    assert (
        "package cycle: mo_align.p -> mo_align.q -> mo_align.p (mo_align.p -> mo_align.q.m; mo_align.q.m -> mo_align.p.n)"
        in lines
    )
    assert not [line for line in lines if "typed" in line]  # a TYPE_CHECKING import never runs: no cycle
    assert lines[-1].endswith(": 4 violation(s), 0 exempt"), lines  # a <-> b, p <-> q.m, packages a/b and p/q


def test_a_forbidden_layer_edge_is_reported_with_the_chain_from_the_core(tmp_path):
    package = write_package(
        tmp_path,
        {
            "trainer/__init__.py": "from mo_align import util\n",
            "util.py": "def f():\n    from mo_align.hub import card  # lazy: still an edge of the graph\n",
            "hub/card.py": "X = 1\n",
            "rewards/accuracy.py": "from mo_align.weightings.validation import X\n",
            "weightings/validation.py": "X = 1\n",
            "configs.py": "import bench.run  # optional extra\n",
        },
    )
    rc, lines = run_check(package)
    assert rc == 1
    why = "the core must not import the experiment layer"
    assert (
        f"layer: mo_align.util -> mo_align.hub.card (line 2): {why} (via mo_align.trainer -> mo_align.util)" in lines
    )
    assert f"layer: mo_align.configs -> bench.run (line 1): {why} (via mo_align.configs)" in lines
    assert (
        "layer: mo_align.rewards.accuracy -> mo_align.weightings.validation (line 1): the rewards must not import the "
        "weightings (via mo_align.rewards.accuracy)"
    ) in lines


def test_a_private_name_from_another_package_is_reported_and_one_from_the_same_package_is_not(tmp_path):
    package = write_package(
        tmp_path,
        {
            "runs/report/plots.py": "def _figure():\n    pass\n\n\ndef figure():\n    pass\n",
            "runs/report/render.py": "from mo_align.runs.report.plots import _figure\n",
            "lab/demo.py": "from mo_align.runs.report.plots import _figure, figure\n",
            "lab/jobs.py": "from mo_align.runs.report import _helpers\n",
            "runs/report/_helpers.py": "X = 1\n",
        },
    )
    rc, lines = run_check(package)
    assert rc == 1
    assert "private: mo_align.lab.demo imports _figure from mo_align.runs.report.plots (line 1)" in lines
    assert "private: mo_align.lab.jobs imports _helpers from mo_align.runs.report._helpers (line 1)" in lines
    assert not [line for line in lines if "render" in line]


@pytest.mark.parametrize(
    ("body", "reported"),
    [
        ("def f():\n    import json\n", True),
        ("def f():\n    import json  # fast enough\n", True),  # a comment, but not saying why
        ("class C:\n    import json\n", True),
        ("def f():\n    import wandb  # optional extra: wandb\n", False),
        (
            "def f():\n    # lazy: matplotlib loads when a figure is drawn\n    import matplotlib\n\n    import numpy\n",
            False,
        ),
        (
            "def f():\n    try:\n        import vllm  # optional extra: vllm\n    except ImportError:\n        pass\n",
            False,
        ),
        ("import json\n\nif json:\n    import os\n", False),  # module level, under an if: not nested
    ],
)
def test_an_in_function_import_needs_a_comment_saying_why(tmp_path, body, reported):
    package = write_package(tmp_path, {"mod.py": body})
    rc, lines = run_check(package)
    nested = [line for line in lines if line.startswith("nested: mo_align.mod line ")]
    assert (rc == 1, bool(nested)) == (reported, reported), lines
    if reported:
        assert nested == [
            "nested: mo_align.mod line 2 imports json inside a function or class with no comment saying why "
            "(an optional extra / a lazy import)"
        ]


def test_a_file_name_spelled_in_two_modules_is_reported(tmp_path):
    package = write_package(
        tmp_path,
        {
            "state.py": '"""Writes mo_state.pt."""\n\nSTATE_FILE = "mo_state.pt"\n',
            "checkpoints.py": 'FILES = ["mo_state.pt", "optimizer.pt"]\n',
            "report.py": 'def f(d):\n    return f"{d}/mo_state.pt", "optimizer.pt.tmp"\n',  # f-string text: not a name
        },
    )
    rc, lines = run_check(package)
    assert rc == 1
    assert lines[:-1] == [
        "file name: 'mo_state.pt' spelled in 2 modules: mo_align.checkpoints, mo_align.state (one module owns the "
        "constant, the others import it)"
    ]
