"""MkDocs hook: publish the repository files that pages link to from outside ``docs/``.

Pages link to files such as ``../bench/results/cifake/roc_curve.png`` so that the links also
work when the Markdown is read on GitHub; MkDocs serves only what lies under ``docs/``. This hook
adds each such file to the site under ``repository/`` and points the page's link at that copy.
A link outside ``docs/`` to a file that does not exist is left alone, so the strict build reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

PUBLISHED_UNDER = "repository"
# The target of an inline Markdown link or image that starts by leaving the page's folder.
_OUTWARD_LINK = re.compile(r"(?<=\]\()(?:\.\./)+[^)\s#?]+")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for page in files.documentation_pages():
        for match in _OUTWARD_LINK.finditer(page.content_string):
            repository_path = _repository_path(config, page.src_uri, match.group())
            if repository_path and files.get_file_from_path(f"{PUBLISHED_UNDER}/{repository_path}") is None:
                source = Path(config.config_file_path).parent / repository_path
                files.append(File.generated(config, f"{PUBLISHED_UNDER}/{repository_path}", abs_src_path=str(source)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def published(match: re.Match[str]) -> str:
        repository_path = _repository_path(config, page.file.src_uri, match.group())
        if repository_path is None:
            return match.group()
        return posixpath.relpath(f"{PUBLISHED_UNDER}/{repository_path}", posixpath.dirname(page.file.src_uri))

    return _OUTWARD_LINK.sub(published, markdown)


def _repository_path(config: MkDocsConfig, page_uri: str, target: str) -> str | None:
    """The repository-relative path of a link target outside ``docs/`` that names an existing file."""
    root = Path(config.config_file_path).parent.resolve()
    docs = Path(config.docs_dir).resolve()
    resolved = (docs / posixpath.dirname(page_uri) / target).resolve()
    if resolved.is_relative_to(docs) or not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved.relative_to(root).as_posix()
