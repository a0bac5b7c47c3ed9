"""The lab's phase diagram (``--sweep``): share validation and CLI errors, warm-start reuse, the table and plot built
from fabricated run files with hand-computed expectations, and a minimal real sweep end to end."""

import json
import subprocess
import sys

import pytest

from mo_align.lab import sweep
from mo_align.lab.evidence import EVAL_SCORES_FILE, EVIDENCE_FILE, lab_evidence
from mo_align.lab.run import main
from mo_align.lab.sweep import DEFAULT_SHARES, SWEEP_ALGORITHMS, check_shares, write_sweep
from mo_align.process_group import die_with_parent, run_group
from mo_align.runs.report import PNG_SIGNATURE


OBJECTIVES = ["accuracy", "conciseness", "clarity"]


def test_check_shares_sorts_and_refuses_bad_values():
    assert check_shares([0.2, 0.02, 0.05]) == [0.02, 0.05, 0.2]
    assert check_shares(DEFAULT_SHARES) == list(DEFAULT_SHARES)
    with pytest.raises(ValueError, match=r"in \[0, 1\), got \[1.5\]"):
        check_shares([0.1, 1.5])
    with pytest.raises(ValueError, match="distinct"):
        check_shares([0.1, 0.1])
    with pytest.raises(ValueError, match="at least two"):
        check_shares([0.1])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sweep", "0.05", "1.5"], "--sweep: every share must be in [0, 1), got [1.5]"),
        (["--sweep", "0.1"], "--sweep: a sweep needs at least two shares"),
        (["--sweep", "0.1", "0.1"], "--sweep: shares must be distinct"),
        (["--sweep", "--task", "easy"], "--sweep: cannot be combined with --task"),
        (["--sweep", "--compact-share", "0.1"], "--sweep: cannot be combined with --compact-share"),
        (["--sweep", "--quick"], "--sweep: cannot be combined with --quick"),
        (["--sweep", "--algorithms", "linear", "nope"], "--algorithms: unknown ['nope']"),
        (["--sweep", "0.1", "abc"], "argument --sweep: invalid float value: 'abc'"),
        (["--sweep", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    ],
)
def test_sweep_cli_errors_name_the_flag(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: pytest.fail("must not run"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_sweep_cli_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **kw: calls.append((*a, kw)))
    main(["--sweep"])
    shares, algorithms, seeds, steps, eval_steps, out, jobs, sft_steps, cache, kwargs = calls[0]
    assert kwargs == {"eta": "paper"}  # the recipes' step sizes unless --eta matched
    assert shares == [0.02, 0.05, 0.1, 0.2] and algorithms == list(SWEEP_ALGORITHMS)
    assert algorithms == ["accuracy_only", "linear", "ctwa"] and seeds == [0, 1, 2]
    assert (steps, eval_steps, jobs, sft_steps) == (50, 25, 2, None)
    assert out.endswith("lab-sweep") and cache.endswith("lab-cache")
    main(["--sweep", "0.3", "0.1", "--algorithms", "linear", "--seeds", "4", "--steps", "7", "--out", "x"])
    assert calls[1][:6] == ([0.1, 0.3], ["linear"], [4], 7, 25, "x")
    main(["--sweep", "0.3", "0.1", "--eta", "matched"])
    assert calls[2][-1] == {"eta": "matched"}


def test_warm_starts_reuse_the_cache_and_train_the_rest_one_thread_each(tmp_path, monkeypatch):
    """Share 0.05 is the tradeoff regime: its cached warm start (make lab's) is reused; 0.02 and 0.1 are trained by
    two worker processes at once, one thread each."""
    from mo_align.lab.sft import cached_warm_start
    from mo_align.lab.task import REGIMES, compact_regime

    cache = str(tmp_path / "cache")
    path, meta = cached_warm_start(cache, REGIMES["tradeoff"], steps=400)
    assert meta is None
    (tmp_path / "cache" / path.rsplit("/", 1)[1]).mkdir(parents=True)
    (tmp_path / "cache" / path.rsplit("/", 1)[1] / "lab_sft.json").write_text(json.dumps({"reference_length": 22.3}))
    commands = []

    def fake_run(cmd, env, capture_output, preexec_fn):
        assert preexec_fn is die_with_parent  # a warm start dies with the sweep, even on kill -9
        commands.append((cmd, env["OMP_NUM_THREADS"]))
        share = float(cmd[cmd.index("--warm-start") + 1])
        target, _ = cached_warm_start(cache, compact_regime(share), steps=400)
        (tmp_path / "cache" / target.rsplit("/", 1)[1]).mkdir()
        (tmp_path / "cache" / target.rsplit("/", 1)[1] / "lab_sft.json").write_text('{"reference_length": 20.0}')
        return subprocess.CompletedProcess(cmd, 0, b"", b"")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    got = sweep.warm_starts([0.02, 0.05, 0.1], cache, None, 2, lambda msg: None)
    assert got[0.05] == (path, {"reference_length": 22.3}, None)  # cached: no seconds
    assert got[0.02][1] == {"reference_length": 20.0} and got[0.02][2] >= 0
    assert sorted(float(c[c.index("--warm-start") + 1]) for c, _ in commands) == [0.02, 0.1]
    assert all(threads == "1" and c[c.index("--threads") + 1] == "1" for c, threads in commands)


# ---- the table and the plot from fabricated runs -------------------------------------------------------------------
N_PROMPTS, SAMPLES = 64, 2
# (share, algorithm, seed) -> Δ per objective; every score of a run moves by exactly its Δ and every run of a share
# starts from the same scores, so each seed's Δ vs the share's baseline is exactly its shift. Fixed scalar weights
# 1/3 each. Over 2 seeds (1 df) only a cell without spread between its seeds is significant after Holm.
SHIFTS = {
    (0.05, "linear", 0): (-0.1, 0.4, 0.3),  # identical seeds: accuracy down (p = 0), scalar +0.2 up: interferes
    (0.05, "linear", 1): (-0.1, 0.4, 0.3),
    (0.05, "accuracy_only", 0): (0.2, -0.3, 0.1),  # seed 0 alone would "interfere"; over seeds nothing is significant
    (0.05, "accuracy_only", 1): (0.0, -0.1, 0.0),
    (0.2, "linear", 0): (0.1, 0.4, 0.3),
    (0.2, "linear", 1): (0.0, 0.2, 0.2),
    (0.2, "accuracy_only", 0): (0.1, -0.2, 0.0),
    (0.2, "accuracy_only", 1): (0.3, -0.1, 0.1),
}


def _scores(shift):
    start = [[[(i % 4) / 4, 0.5, 0.5] for _ in range(SAMPLES)] for i in range(N_PROMPTS)]
    final = [[[x + d for x, d in zip(sample, shift)] for sample in prompt] for prompt in start]
    return {"objectives": OBJECTIVES, "evals": [{"step": 0, "rewards": start}, {"step": 50, "rewards": final}]}


def fabricate(root):
    for share in (0.05, 0.2):
        share_root = root / f"share-{share:g}"
        dirs = []
        for (s, algorithm, seed), shift in SHIFTS.items():
            if s != share:
                continue
            run = share_root / f"{algorithm}-seed{seed}"
            run.mkdir(parents=True)
            (run / EVAL_SCORES_FILE).write_text(json.dumps(_scores(shift)))
            dirs.append(str(run))
        evidence = lab_evidence(dirs, preference=[1 / 3] * 3, n_boot=200)
        payload = {"task": f"compact-{share:g}", "share": share, "reference_length": 20.0 + share, **evidence}
        (share_root / EVIDENCE_FILE).write_text(json.dumps(payload))


def test_sweep_table_and_plot_from_fabricated_runs(tmp_path):
    """Holm over 4 cells × 4 quantities = 16 tests: the four zero-spread cells of (0.05, linear) are rejected at
    0.05/16 … 0.05/13; the next smallest p-value, 0.205 ((0.2, linear) conciseness: 0.4 and 0.2, t = 3, 1 df),
    exceeds 0.05/12, so every other interval is at level 1 − 0.05/12, e.g. (0.2, linear) accuracy (0.1 and 0.0):
    0.05 ± tan(π (1/2 − 0.05/24)) · 0.05."""
    import math

    fabricate(tmp_path)
    timing = {"seconds": 600.0, "warm_start_seconds": 100.0, "runs_seconds": 500.0, "warm_starts": {"0.05": None}}
    table = write_sweep(str(tmp_path), [0.05, 0.2], ["accuracy_only", "linear"], timing)
    cells = {(c["share"], c["algorithm"]): c for c in table["cells"]}
    assert list(cells) == [(0.05, "accuracy_only"), (0.05, "linear"), (0.2, "accuracy_only"), (0.2, "linear")]

    lin = cells[(0.05, "linear")]
    assert (lin["n"], lin["interfering"]) == (2, ["accuracy"])
    acc, scalar = lin["objectives"]["accuracy"], lin["objectives"]["scalar"]
    assert acc["deltas"] == pytest.approx([-0.1, -0.1]) and acc["ci"] == pytest.approx([-0.1, -0.1])
    assert (acc["verdict"], acc["p"], acc["level"]) == ("down", 0.0, pytest.approx(1 - 0.05 / 16))
    assert (scalar["mean"], scalar["verdict"]) == (pytest.approx(0.2), "up")

    ctl = cells[(0.05, "accuracy_only")]
    conc = ctl["objectives"]["conciseness"]
    assert ctl["interfering"] == [] and conc["verdict"] == "not significant"
    assert (conc["median"], conc["min"], conc["max"]) == pytest.approx((-0.2, -0.3, -0.1))

    flat = cells[(0.2, "linear")]["objectives"]["accuracy"]
    half = math.tan(math.pi * (0.5 - 0.05 / 24)) * 0.05
    assert flat["ci"] == pytest.approx([0.05 - half, 0.05 + half]) and flat["level"] == pytest.approx(1 - 0.05 / 12)
    assert cells[(0.2, "linear")]["objectives"]["conciseness"]["p"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert all(c["interfering"] == [] for key, c in cells.items() if key != (0.05, "linear"))

    assert table["starts"]["0.05"]["start"] == pytest.approx({"accuracy": 0.375, "conciseness": 0.5, "clarity": 0.5})
    assert table["starts"]["0.2"]["reference_length"] == pytest.approx(20.2)

    md = (tmp_path / "sweep.md").read_text()
    assert md == table["markdown"]
    assert "| 0.05 | linear | 2 | accuracy | -0.100 [-0.100, -0.100] down; -0.100 (-0.100..-0.100) |" in md
    assert "| 0.05 | accuracy_only | 2 | none | " in md and "Holm-adjusted over 16 tests (family level 95%)" in md
    assert "↓" not in md and "/2" not in md
    assert "| 0.05 | 0.375 | 0.500 | 0.500 | 20.1 |" in md
    assert "Run time 600 s = 10.0 min (warm starts 100 s [0.05: cached], runs 500 s)." in md
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["cells"] == json.loads(json.dumps(table["cells"])) and saved["shares"] == [0.05, 0.2]

    from matplotlib import image

    png = tmp_path / "sweep.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert image.imread(png).shape[0] > 300 and image.imread(png).shape[1] > 500


def test_sweep_table_is_rebuilt_from_a_finished_sweep(tmp_path, capsys):
    fabricate(tmp_path)
    write_sweep(str(tmp_path), [0.05, 0.2], ["accuracy_only", "linear"], {})
    (tmp_path / "sweep.md").unlink()
    (tmp_path / "sweep.png").unlink()
    sweep.main([str(tmp_path)])
    assert "| 0.05 | linear | 2 | accuracy | " in capsys.readouterr().out
    assert (tmp_path / "sweep.md").exists() and (tmp_path / "sweep.png").exists()


def test_a_missing_share_names_the_file(tmp_path):
    fabricate(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"share-0.1/interference.json is missing"):
        write_sweep(str(tmp_path), [0.05, 0.1], ["linear"], {})


@pytest.mark.slow
def test_a_minimal_sweep_end_to_end(tmp_path):
    """Two shares, linear, one seed, 2 GRPO steps, 20-step warm starts: both warm starts trained, both runs done,
    the per-share reports and the sweep's files written."""
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    argv = ["--sweep", "0.05", "0.3", "--algorithms", "linear", "--seeds", "0", "--steps", "2", "--eval-steps", "2"]
    argv += ["--sft-steps", "20", "--out", str(out), "--cache", str(cache)]
    proc = run_group([sys.executable, "-m", "mo_align.lab", *argv], 900, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert len(list(cache.glob("sft-*/lab_sft.json"))) == 2
    for share in ("0.05", "0.3"):
        assert (out / f"share-{share}" / "report" / "report.md").exists()
        assert json.loads((out / f"share-{share}" / EVIDENCE_FILE).read_text())["runs"][0]["run"] == "linear-seed0"
    saved = json.loads((out / "sweep.json").read_text())
    assert [(c["share"], c["algorithm"], c["n"]) for c in saved["cells"]] == [(0.05, "linear", 1), (0.3, "linear", 1)]
    assert saved["timing"]["warm_starts"]["0.05"] > 0 and (out / "sweep.png").exists()
    assert "| 0.3 | linear |" in proc.stdout and "[lab-sweep" in proc.stdout and "total" in proc.stdout


def test_a_finished_run_of_the_same_configuration_is_not_run_again(tmp_path):
    """The sweep resumes: a run directory whose summary records the same worker command (algorithm, seed, warm start
    key, reference length, steps, eval interval), whose recorded settings are the lab's now and whose scores were
    written is reused, anything else is run."""
    from mo_align.lab.protocol import write_settings
    from mo_align.lab.scaling import lab_settings
    from mo_align.lab.sweep import finished

    out = tmp_path / "share-0.05" / "linear-seed0"
    job = {"algo": "linear", "seed": 0, "sft": "/x/cache/sft-abc123", "reference_length": 22.3, "steps": 50}
    job.update(eval_steps=25, threads=1, out=str(out))
    command = (
        "python3 -m mo_align.lab worker --algo linear --seed 0 --sft outputs/lab-cache/sft-abc123 "
        "--reference-length 22.3 --out outputs/lab/linear-seed0 --steps 50 --eval-steps 25 --threads 1"
    )
    out.mkdir(parents=True)
    (out / "mo_summary.json").write_text(json.dumps({"launch_command": command}))
    (out / EVAL_SCORES_FILE).write_text("{}")
    assert not finished(job)  # no recorded settings: a run from before the recipes drove the lab
    settings = lab_settings("linear", 50, output_dir="elsewhere", seed=0, eval_steps=25)  # a moved sweep is fine
    write_settings(str(out), {**settings, "advantage_estimator": "reinforce_pp"})
    assert not finished(job)  # trained with other settings than the recipe and the scaling rule give now
    write_settings(str(out), settings)
    (out / EVAL_SCORES_FILE).unlink()
    assert not finished(job)  # no scores yet: the run did not finish
    (out / EVAL_SCORES_FILE).write_text("{}")
    assert finished(job) and finished({**job, "eta": "matched"})  # linear has no step size to match
    assert not finished({**job, "steps": 75})
    assert not finished({**job, "seed": 1})
    assert not finished({**job, "sft": "/x/cache/sft-other"})
    assert not finished({**job, "reference_length": 20.7})
    (out / "mo_summary.json").write_text(json.dumps({"launch_command": None}))
    assert not finished(job)


def test_runs_of_different_shares_keep_their_own_logs_and_names(tmp_path, monkeypatch):
    """linear-seed0 exists at every share: the sweep labels each run share-<s>/<run>, which names its log file and
    its line in the console, so no log overwrites another."""
    from mo_align.lab import jobs as lab_jobs

    def fake_run(cmd, stdout, stderr, env, preexec_fn):
        assert preexec_fn is die_with_parent  # a worker dies with the lab, even on kill -9
        stdout.write(f"trained {cmd[cmd.index('--out') + 1]}\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(lab_jobs.subprocess, "run", fake_run)
    base = {"algo": "linear", "seed": 0, "sft": "s", "reference_length": 20.0, "steps": 1, "eval_steps": 1}
    todo = [
        {
            **base,
            "threads": 1,
            "out": str(tmp_path / f"share-{s}" / "linear-seed0"),
            "label": f"share-{s}/linear-seed0",
        }
        for s in ("0.02", "0.1")
    ]
    said = []
    done, seconds = lab_jobs._run_jobs(todo, 2, str(tmp_path), said.append, poll=0.01)
    assert [rc for _, rc in done] == [0, 0] and set(seconds) == {job["out"] for job in todo}
    for s in ("0.02", "0.1"):
        log = (tmp_path / f"share-{s}_linear-seed0.log").read_text()
        assert log == f"trained {tmp_path / f'share-{s}' / 'linear-seed0'}\n"
    finished = [line for line in said if ": ok in " in line]  # (progress lines may come before)
    assert sorted(line.split(":")[0] for line in finished) == ["share-0.02/linear-seed0", "share-0.1/linear-seed0"]
