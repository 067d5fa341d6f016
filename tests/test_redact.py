import io
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.redact import MASK, RedactedStream, configured_secrets, redact, secrets_in
from pipeline.settings import load_settings

UNRESERVED = string.ascii_letters + string.digits + "-._~"
# What people put in passwords, unescaped "@" and ":" included; "/", "?", "#" end an authority.
PASSWORD_CHARS = UNRESERVED + "!$&()*+,;=:@%"
SECRET_PARAMS = ["token", "access_token", "X-Amz-Security-Token", "X-Amz-Signature", "password", "sig", "api_key"]
PLAIN_PARAMS = ["authSource", "directConnection", "retryWrites", "replicaSet", "n"]

schemes = st.sampled_from(["mongodb", "mongodb+srv", "postgresql+psycopg2", "https", "s3"])
users = st.text(UNRESERVED + "%", max_size=12)
passwords = st.text(PASSWORD_CHARS, min_size=1, max_size=24)
hosts = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,15}(:[0-9]{1,5})?(,[a-z0-9]{1,8}:[0-9]{1,5})?", fullmatch=True)
paths = st.from_regex(r"(/[A-Za-z0-9@:._-]{0,10}){0,3}", fullmatch=True)
values = st.text(UNRESERVED + "%=+", max_size=16)
params = st.lists(st.tuples(st.sampled_from(SECRET_PARAMS + PLAIN_PARAMS), values), max_size=4)
prose = st.text(st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), max_size=30)


def query(pairs: list[tuple[str, str]], *, masked: bool) -> str:
    shown = [(k, MASK if masked and k in SECRET_PARAMS and v else v) for k, v in pairs]
    return "?" + "&".join(f"{k}={v}" for k, v in shown) if pairs else ""


@given(prose, schemes, users, passwords, hosts, paths, params, prose)
def test_only_the_password_and_credential_parameters_are_hidden(
    before, scheme, user, password, host, path, pairs, after
):
    uri = f"{scheme}://{user}:{password}@{host}{path}"
    text = f"{before} {uri}{query(pairs, masked=False)} {after}"
    expected = f"{before} {scheme}://{user}:{MASK}@{host}{path}{query(pairs, masked=True)} {after}"
    assert redact(text) == expected
    assert password in secrets_in(text)


@given(st.text(max_size=200))
def test_redacting_twice_changes_nothing_more(text):
    once = redact(text)
    assert redact(once) == once


@given(st.text(st.characters(blacklist_characters=":"), max_size=200))
def test_text_without_uris_is_unchanged(text):
    assert redact(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mongodb://u:secret@h/db", "mongodb://u:***@h/db"),
        (
            "failed: mongodb+srv://u:p%40ss@c.example.net/?authSource=admin.",
            "failed: mongodb+srv://u:***@c.example.net/?authSource=admin.",
        ),
        ("'https://me:tok@dagshub.com/o/r.mlflow'", "'https://me:***@dagshub.com/o/r.mlflow'"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&x=1",
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&x=1",
        ),
        ("mongodb://u@h/?authMechanism=MONGODB-X509", "mongodb://u@h/?authMechanism=MONGODB-X509"),
        (
            "sqlite:////tmp/mlflow.db and mongodb://127.0.0.1:27017",
            "sqlite:////tmp/mlflow.db and mongodb://127.0.0.1:27017",
        ),
    ],
)
def test_examples(text, expected):
    assert redact(text) == expected


def test_secrets_in_gives_the_decoded_password_too():
    assert secrets_in("mongodb://u:p%40ss@h/db") == ["p%40ss", "p@ss"]


def test_configured_secrets(settings, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://me:tr4cking-s3cret@mlflow.example.org/")
    monkeypatch.setenv("MONGO_URI", "mongodb://u:m0ngo%40pw@h/?token=abcdef")
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "dagshub-t0ken")
    assert configured_secrets(settings) == ["dagshub-t0ken"]  # settings made before the URIs were set
    assert set(configured_secrets(load_settings())) == {
        "tr4cking-s3cret",
        "m0ngo%40pw",
        "m0ngo@pw",
        "abcdef",
        "dagshub-t0ken",
    }


def test_a_redacted_stream_hides_uri_passwords_and_given_secrets():
    written = io.StringIO()
    stream = RedactedStream(written, ["token-12345", "abc"])  # "abc" is too short to mask inside text
    assert stream.write("View run at: http://admin:pw%40x@h:5000/#/runs/1 with token-12345, abc\n") > 0
    assert written.getvalue() == "View run at: http://admin:***@h:5000/#/runs/1 with ***, abc\n"
    assert stream.getvalue() == written.getvalue()  # everything else is the wrapped stream's
