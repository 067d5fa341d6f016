"""Hide credentials in text before it is printed, logged or raised: ``redact("mongodb://u:pw@h/db")``.

Only the standard library, so that error paths can import it cheaply.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, TextIO
from urllib.parse import unquote

if TYPE_CHECKING:
    from pipeline.settings import Settings

MASK = "***"
# Secrets shorter than this are not masked inside other text, as Airflow does: it would garble every line.
MIN_SECRET = 5
# A URI runs from its scheme to the first character that cannot be part of it in prose or logs.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_PARAM = re.compile(r"([^&;=#]*)=([^&;#]*)")
# Query parameters whose value is a credential: tokens, passwords, signed-URL signatures, keys.
_SECRET_NAME = re.compile(r"(?i)token|passw|pwd|secret|signature|credential|api[-_]?key|^sig$")


def redact(text: str) -> str:
    """``text`` with the password and every credential query parameter of each URI in it replaced by ``***``.

    ``mongodb://u:secret@h/db`` becomes ``mongodb://u:***@h/db``; ``https://h/x?token=abc&n=1``
    becomes ``https://h/x?token=***&n=1``. User names, hosts and paths stay readable.
    """
    return _URI.sub(lambda match: _mask(match.group(0)), text)


def hide(text: str, hidden: list[str]) -> str:
    """:func:`redact`, and each string of ``hidden`` (longest first) shown as ``***`` too."""
    text = redact(text)
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactedStream:
    """A text stream (``sys.stdout``) whose writes go through :func:`hide`: libraries print URIs too."""

    def __init__(self, stream: TextIO, hidden: list[str]) -> None:
        self._stream, self._hidden = stream, [secret for secret in hidden if len(secret) >= MIN_SECRET]

    def write(self, text: str) -> int:
        self._stream.write(hide(text, self._hidden))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def secrets_in(text: str) -> list[str]:
    """The credentials :func:`redact` hides in ``text``, as written and percent-decoded (for log maskers)."""
    found: list[str] = []
    for match in _URI.finditer(text):
        uri = match.group(0)
        for start, end in _secret_spans(uri):
            found += [value for value in dict.fromkeys((uri[start:end], unquote(uri[start:end]))) if value]
    return list(dict.fromkeys(found))


def _mask(uri: str) -> str:
    for start, end in reversed(_secret_spans(uri)):
        uri = uri[:start] + MASK + uri[end:]
    return uri


def _secret_spans(uri: str) -> list[tuple[int, int]]:
    """(start, end) of the password and of each credential parameter's value, in order."""
    authority_start = uri.index("://") + 3
    query = uri.find("?", authority_start)
    fragment = uri.find("#", authority_start)
    query_end = len(uri) if fragment == -1 or fragment < query else fragment
    authority_end = min(i for i in (uri.find("/", authority_start), query, fragment, len(uri)) if i != -1)
    spans = []
    # The last "@" of the authority ends the user info, so an unescaped "@" in a password is hidden too.
    at = uri.rfind("@", authority_start, authority_end)
    colon = uri.find(":", authority_start, at) if at != -1 else -1
    if colon != -1 and colon + 1 < at:
        spans.append((colon + 1, at))
    if query != -1:
        for param in _PARAM.finditer(uri, query + 1, query_end):
            if _SECRET_NAME.search(param.group(1)) and param.group(2):
                spans.append(param.span(2))
    return spans


# Credentials that reach the pipeline through the environment rather than inside a URI.
SECRET_ENVIRONMENT = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "DAGSHUB_USER_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def configured_secrets(settings: Settings) -> list[str]:
    """Every credential of a configuration, as it may appear in text: URI passwords and tokens, secret variables."""
    uris = [settings.mongo.uri or "", settings.mlflow_uri, settings.storage.incoming_uri]
    found = [secret for uri in uris for secret in secrets_in(uri)]
    return list(dict.fromkeys(found + [os.environ[name] for name in SECRET_ENVIRONMENT if os.environ.get(name)]))
