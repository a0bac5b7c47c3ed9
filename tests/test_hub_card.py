"""The pieces of mo_align.hub on their own: the repo-id check is huggingface_hub's, the card comes from its template
file, the secret scan finds a token across read chunks."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from mo_align.hub import card, main, redaction
from tests.test_hub import REPO, FakeHfApi, _summary


def _valid(repo_id: str) -> bool:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "repo_id", ["someone/x.y-z_1", "name-only", "a/b/c", "foo--bar", "ns/x..y", "-lead", "x" * 97, "ns/näme"]
)
def test_repo_id_is_checked_as_huggingface_hub_checks_it(tmp_path, capsys, repo_id):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(b"weights")
    rc = main([str(run_dir), f"--repo-id={repo_id}"], api=FakeHfApi(tmp_path / "hub"))
    err = capsys.readouterr().err
    if _valid(repo_id):
        assert rc == 0, err
    else:
        assert rc == 2 and err.startswith(f"mo-align push: error: invalid repo id {repo_id!r}")
        assert len(err.strip().splitlines()) == 1
        assert not (run_dir / "README.md").exists()  # refused before anything was written


def test_hub_id_follows_validate_repo_id(tmp_path):
    assert card.hub_id("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert card.hub_id("foo--bar") is None and card.hub_id("a/b/c") is None
    assert card.hub_id(str(tmp_path)) is None and card.hub_id("./model") is None and card.hub_id(None) is None


def test_card_is_the_template_rendered_by_huggingface_hub(tmp_path, monkeypatch):
    text = card.render_model_card(_summary(), REPO, dataset="HuggingFaceH4/MATH-500")
    parsed = ModelCard(text)  # huggingface_hub reads back what it rendered: front matter and body
    assert parsed.data.datasets == ["HuggingFaceH4/MATH-500"] and parsed.data.pipeline_tag == "text-generation"
    assert parsed.text.startswith("\n# tiny-mo\n\nThis model was fine-tuned from a base model with")
    # the body is the template's: a different template file gives a different card from the same summary
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n{{ algorithm }} on {{ objectives | join(', ') }}\n")
    monkeypatch.setattr("mo_align.runs.card.TEMPLATE", template)  # the card is rendered there (hub.card re-exports it)
    other = card.render_model_card(_summary(), REPO)
    assert other.endswith("\n---\nmgda on `accuracy`, `conciseness`")  # values arrive escaped: names as code
    assert ModelCard(other).data.tags == ModelCard(text).data.tags


def test_secret_found_across_read_chunks(tmp_path):
    secret = "hf_StraddlesTheChunkBorder"
    chunk = 1 << 20
    (tmp_path / "a.bin").write_bytes(b"x" * (chunk - 5) + secret.encode() + b"y" * 10)  # split 5 | rest
    (tmp_path / "b.bin").write_bytes(b"x" * (2 * chunk) + secret.encode()[:-1])  # never complete
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text(f"token={secret}\n")
    assert redaction.files_containing(tmp_path, secret) == ["a.bin", "sub/c.txt"]
    assert redaction.files_containing(tmp_path, secret, ["b.bin", "missing"]) == []
    assert redaction.files_containing(tmp_path, None) == []


# ---- papers: each weighting class's own, as links and BibTeX -------------------------------------------------------
def _bibtex_entries(text: str) -> list[dict[str, str]]:
    """The ``@misc`` entries of the card's BibTeX block: one dict of fields (and ``key``) per entry."""
    block = re.search(r"## Citation\n\n```bibtex\n(.*?)\n```\n", text, re.S)
    assert block is not None, "no BibTeX block"
    entries = []
    for key, body in re.findall(r"@misc\{([^,\n]+),\n(.*?)\n\}", block.group(1), re.S):
        entries.append({"key": key, **dict(re.findall(r"^  (\w+) = \{(.*)\},$", body, re.M))})
    assert len(entries) == block.group(1).count("@misc{")
    return entries


@pytest.mark.parametrize(
    ("algorithm", "eprints"),
    [
        ("linear", ["2602.06869"]),
        ("tchebycheff", ["2602.06869"]),
        ("lagrangian", ["2602.06869"]),
        ("ctwa", ["2602.06869"]),  # the interference paper is CTWA's own: cited once
        ("smooth_tchebycheff", ["2602.06869", "2402.19078"]),
        ("mgda", ["2602.06869", "1810.04650"]),
        ("gradnorm", ["2602.06869", "1711.02257"]),
        ("dynamic", ["2602.06869", "2509.11452"]),
        ("pama", ["2602.06869", "2508.07768"]),
        ("upgrad", ["2602.06869", "2406.16232"]),
        ("dualproj", ["2602.06869", "2406.16232", "1706.08840"]),
        ("cagrad", ["2602.06869", "2406.16232", "2110.14048"]),
        ("aligned_mtl", ["2602.06869", "2406.16232", "2305.19000"]),
        ("pcgrad", ["2602.06869", "2406.16232", "2001.06782"]),
        ("jd:GradVac", ["2602.06869", "2406.16232", "2010.05874"]),
        ("jd:Mean", ["2602.06869", "2406.16232"]),
    ],
)
def test_card_cites_the_weightings_papers_in_bibtex(algorithm, eprints):
    """Before: no BibTeX at all. Now one @misc per paper: arXiv 2602.06869 always, then the weighting's own."""
    entries = _bibtex_entries(card.render_model_card(_summary(algorithm=algorithm), REPO))
    assert [e.get("eprint") for e in entries] == eprints
    assert all(e["archivePrefix"] == "arXiv" and e["year"].isdigit() and e["author"] for e in entries)
    assert entries[0] == {
        "key": "lu2026interference",
        "title": "Cross-objective interference in multi-objective RL alignment",
        "author": "Lu and Jiang",
        "year": "2026",
        "eprint": "2602.06869",
        "archivePrefix": "arXiv",
    }
    assert len({e["key"] for e in entries}) == len(entries)


def test_the_card_reads_the_papers_from_the_weighting_class(monkeypatch):
    """The papers live on the strategy class (``papers``): a class that names another paper gets it in its card;
    a paper without an arXiv id (IMTL-G's) is an entry with what is known, and CTWA cites its base's papers."""
    from mo_align.weightings import LinearWeighting
    from mo_align.weightings.papers import Paper

    extra = Paper("doe2020x", "Doe and Roe", 2020, "A Title", "2001.00001")
    monkeypatch.setattr(LinearWeighting, "papers", (extra,))
    entries = _bibtex_entries(card.render_model_card(_summary(algorithm="linear"), REPO))
    assert [e["key"] for e in entries] == ["lu2026interference", "doe2020x"]
    assert entries[1] == {
        "key": "doe2020x",
        "title": "A Title",
        "author": "Doe and Roe",
        "year": "2020",
        "eprint": "2001.00001",
        "archivePrefix": "arXiv",
    }
    imtlg = _bibtex_entries(card.render_model_card(_summary(algorithm="imtlg"), REPO))[-1]
    assert imtlg == {
        "key": "liu2021imtl",
        "title": "Towards Impartial Multi-task Learning",
        "author": "Liu and others",
        "year": "2021",
    }
    wrapped = card.render_model_card(
        _summary(algorithm="ctwa", weighting_hyperparameters={"base": "smooth_tchebycheff"}), REPO
    )
    assert [e["eprint"] for e in _bibtex_entries(wrapped)] == ["2602.06869", "2402.19078"]
    assert "- Smooth Tchebycheff Scalarization for Multi-Objective Optimization (Lin et al. 2024): " in wrapped


# ---- the recipe the run was launched with ---------------------------------------------------------------------------
def _launch_block(text: str) -> str:
    return re.search(r"## Launch command\n\n(.*?)\n## Usage", text, re.S).group(1)


def test_the_launch_command_names_the_uploaded_recipe(tmp_path, monkeypatch):
    """Before: the command named recipes/tiny/mgda.yaml, which the repository does not hold. Now, when the run
    directory holds mo_recipe.yaml, --config names it and the card says what it is; without it, the command is as
    typed; a recipe that holds the push token is not uploaded, so the card does not name it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"weights")
    summary = _summary(launch_command="mo-align train --config 'my recipes/r.yaml' --learning_rate 5e-4")
    (run / "mo_summary.json").write_text(json.dumps(summary))
    plain = _launch_block(card.write_model_card(run, summary, REPO))
    assert plain == "```bash\nmo-align train --config 'my recipes/r.yaml' --learning_rate 5e-4\n```\n"
    (run / "mo_recipe.yaml").write_text("weighting: mgda\n")
    api = FakeHfApi(tmp_path / "hub")
    assert main([str(run), "--repo-id", REPO], api=api) == 0
    uploaded = api.uploaded()
    assert (uploaded / "mo_recipe.yaml").read_text() == "weighting: mgda\n"
    block = _launch_block((uploaded / "README.md").read_text())
    assert block.endswith("```bash\nmo-align train --config mo_recipe.yaml --learning_rate 5e-4\n```\n")
    assert block.startswith("`mo_recipe.yaml` in this repository is the recipe the run was launched with")
    monkeypatch.setenv("HF_TOKEN", "hf_PushTokenInTheRecipe1")
    (run / "mo_recipe.yaml").write_text("note: hf_PushTokenInTheRecipe1\n")
    api = FakeHfApi(tmp_path / "hub2")
    assert main([str(run), "--repo-id", REPO], api=api) == 0
    assert not (api.uploaded() / "mo_recipe.yaml").exists()
    assert _launch_block((api.uploaded() / "README.md").read_text()) == plain


def test_saved_recipe_hides_secrets_and_keeps_the_rest(tmp_path, monkeypatch):
    """The copy in the run directory (and so on the Hub) holds no secret: values of secret-named keys, in block and
    flow style, Hugging Face token shapes and the environment's tokens are ***; comments and other keys stay."""
    from mo_align.recipe import RECIPE_FILE, save_recipe

    monkeypatch.setenv("HF_TOKEN", "envtok_abc123")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "# my recipe\nweighting: linear\nwandb_api_key: abc, def\npad_token: <|pad|>\nmax_tokens: 5\n"
        "note: hf_ABCDEFGHIJKL and envtok_abc123\nenv: {WANDB_API_KEY: k1, OTHER: ok, 'my_secret': s2}\n"
    )
    path = save_recipe(str(recipe), str(tmp_path / "out"))
    assert path == str(tmp_path / "out" / RECIPE_FILE)
    assert (tmp_path / "out" / RECIPE_FILE).read_text() == (
        "# my recipe\nweighting: linear\nwandb_api_key: ***\npad_token: <|pad|>\nmax_tokens: 5\n"
        "note: hf_*** and ***\nenv: {WANDB_API_KEY: ***, OTHER: ok, 'my_secret': ***}\n"
    )
