"""The reference pages in docs/ are what the JSON Schemas say today, and every field has a description."""

from __future__ import annotations

import shutil

import pytest

from airgap._internal import specdoc
from tests.helpers import REPO


def test_committed_reference_pages_are_current():
    for page, text in specdoc.pages().items():
        committed = (REPO / "docs" / page).read_text("utf-8")
        assert committed == text, f"docs/{page} is stale: run {specdoc.GENERATOR}"


@pytest.mark.parametrize("page", list(specdoc.PAGES))
def test_every_field_has_a_description(page):
    name, _ = specdoc.PAGES[page]
    schema = specdoc.load_schema(name)
    assert schema.get("description"), f"{name}: no description at the top"
    missing = [path for path, node, _ in specdoc.fields(schema) if not node.get("description", "").strip()]
    assert not missing, f"{name}: fields without a description: {missing}"


def test_every_spec_field_is_on_the_page():
    text = (REPO / "docs" / "spec-reference.md").read_text()
    for path, _, _ in specdoc.fields(specdoc.load_schema("spec.schema.json")):
        assert f"| `{path}` |" in text
    assert "| `images[].ref` | text | yes |" in text and "| `metadata.name` | text | yes |" in text


def test_the_example_is_a_valid_spec(tmp_path):
    from airgap.spec import load_spec

    """The example as the page shows it loads (variables substituted, files and layout present)."""
    page = (REPO / "docs" / "spec-reference.md").read_text()
    yaml_text = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.conf").write_text("a=1\n")
    layout = tmp_path / "images" / "layout"
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (tmp_path / "bundle.yaml").write_text(yaml_text)
    spec = load_spec(tmp_path / "bundle.yaml", env={})
    assert [i.kind for i in spec.images] == ["registry", "registry", "oci-layout"]


def test_check_mode_finds_a_stale_page(tmp_path, capsys):
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    assert specdoc.main(["--docs", str(docs), "--check"]) == 0
    page = docs / "spec-reference.md"
    page.write_text(page.read_text().replace("DNS label", "DNS name"))
    assert specdoc.main(["--docs", str(docs), "--check"]) == 1
    assert "spec-reference.md" in capsys.readouterr().err
    assert specdoc.main(["--docs", str(docs)]) == 0
    assert specdoc.main(["--docs", str(docs), "--check"]) == 0
