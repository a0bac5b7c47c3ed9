"""The pieces of mo_align.hub on their own: the repo-id check is huggingface_hub's, the card comes from its template
file, the secret scan finds a token across read chunks."""

from __future__ import annotations

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
    monkeypatch.setattr(card, "TEMPLATE", template)
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
