"""The docs site builds under --strict, its generated settings reference lists every setting, and the
README's links lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from pymdownx.slugs import slugify

from pipeline.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
ARCHITECTURE_PAGE = PROJECT_ROOT / "docs" / "index.md"
# [text](target) and ![alt](target); a target has no spaces (the README writes none).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
github_slug = slugify(case="lower")  # GitHub's heading anchors; mkdocs.yml makes the site use the same


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
    return site_dir


def test_the_strict_build_documents_every_setting_of_every_section(site: Path) -> None:
    page = (site / "settings-reference" / "index.html").read_text()
    prefix, delimiter = Settings.model_config["env_prefix"], Settings.model_config["env_nested_delimiter"]
    sections = {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    assert {"storage", "mongo", "mlflow", "prepare", "model", "score"} <= set(sections)
    expected = [
        (f"<code>{section}.{name}</code>", f"<code>{(prefix + section + delimiter + name).upper()}</code>")
        for section, model in sections.items()
        for name in model.model_fields
    ]
    missing = [setting for setting, variable in expected if setting not in page or variable not in page]
    assert not missing, f"settings missing from the generated reference: {missing}"


def test_every_relative_link_of_the_readme_leads_to_a_file_and_heading() -> None:
    broken = []
    for target in _link_targets(README.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: and the like: not checked offline
            continue
        path, _, anchor = target.partition("#")
        linked = (README.parent / path).resolve() if path else README
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _heading_anchors(linked.read_text()):
            broken.append(f"{target}: {linked.name} has no heading with that anchor")
    assert not broken, "README.md links that lead nowhere: " + "; ".join(broken)


def test_the_readme_and_the_docs_home_page_draw_one_architecture() -> None:
    def diagram(markdown: str) -> str:
        found = re.search(r"^```mermaid\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)
        assert found, "no mermaid diagram"
        return found.group(1)

    assert diagram(README.read_text()) == diagram(ARCHITECTURE_PAGE.read_text())


def _outside_code_blocks(markdown: str) -> list[str]:
    lines, in_code = [], False
    for line in markdown.splitlines():
        if FENCE.match(line.lstrip()):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def _link_targets(markdown: str) -> list[str]:
    prose = (re.sub(r"`[^`]*`", "", line) for line in _outside_code_blocks(markdown))  # code spans hold no links
    return [target for line in prose for target in LINK.findall(line)]


def _heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: the slug, then -1, -2, ... for repeats."""
    anchors: set[str] = set()
    for line in _outside_code_blocks(markdown):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "")  # as rendered
        slug = github_slug(text, "-")
        anchor, repeat = slug, 0
        while anchor in anchors:
            repeat += 1
            anchor = f"{slug}-{repeat}"
        anchors.add(anchor)
    return anchors
