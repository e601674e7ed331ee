"""Secrets (issue 13, item 7): one-line strings, a bad file named by its line and never shown,
generated keys kept in memory until a real run appends them to what the user wrote."""

from __future__ import annotations

import os

import pytest

from roles.common import secrets
from roles.common.secrets import SecretError

KEY = "9f3c1d2e8b7a6f5e4d3c2b1a0f9e8d7c"  # what must never appear in a message
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA" + KEY + "\n-----END"


@pytest.fixture(autouse=True)
def secrets_path(monkeypatch, tmp_path):
    path = tmp_path / "secrets.yml"
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(path))
    for name in list(os.environ):
        if name.startswith("AICODER_") and name != "AICODER_SECRETS_FILE":
            monkeypatch.delenv(name)
    yield path
    secrets._GENERATED.clear()


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)


def refusal(name: str = "tabbyapi_api_key") -> str:
    with pytest.raises(SecretError) as caught:
        secrets.get(name)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("# mine\ntabbyapi_api_key: 0123\n", ["line 2", "tabbyapi_api_key", "quote it"]),
        ("tabbyapi_admin_key: yes\n", ["line 1", "quote it"]),
        (f"tabbyapi_api_key: '{KEY}'\nhf_token: [{KEY}]\n", ["line 2", "not a string"]),
        (f'tabbyapi_api_key: "{KEY}\\n{KEY}"\n', ["line 1", "control character"]),
        (f"tabbyapi_api_key: |\n  {PRIVATE.replace(chr(10), chr(10) + '  ')}\n", ["private key"]),
        (f"tabbyapi_api_key: '{KEY}\nadmin: [\n", ["not valid YAML", "line"]),
        (f"tabbyapi_api_key: {KEY}\n\tbad: {KEY}\n", ["not valid YAML", "line 2"]),
        (f"- {KEY}\n", ["mapping"]),
        (f"Key-With-Caps: '{KEY}'\n", ["line 1", "lower-case"]),
    ],
    ids=["octal", "bool", "list", "newline", "private-key", "unclosed", "tab", "list-file", "name"],
)
def test_a_bad_file_is_named_by_line_and_never_shown(secrets_path, text, fragments):
    write(secrets_path, text)
    message = refusal()
    for fragment in fragments:
        assert fragment in message, message
    assert KEY not in message and "b3BlbnNzaC1r" not in message, message
    assert str(secrets_path) in message


def test_the_refusal_has_no_chained_traceback(secrets_path):
    """A YAML error carries the text around it; the refusal drops it (``from None``)."""
    write(secrets_path, f"tabbyapi_api_key: '{KEY}\nx: [\n")
    with pytest.raises(SecretError) as caught:
        secrets.get("tabbyapi_api_key")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_folder_a_missing_folder_and_a_shared_mode_are_refused(secrets_path, monkeypatch):
    secrets_path.mkdir()
    assert "is a folder" in refusal()
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(secrets_path.parent / "nope" / "s.yml"))
    assert "does not exist" in refusal() and "mkdir -p" in refusal()
    assert not (secrets_path.parent / "nope").exists()
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(secrets_path.parent / "shared.yml"))
    write(secrets_path.parent / "shared.yml", f"tabbyapi_api_key: '{KEY}'\n", 0o644)
    assert "chmod 600" in refusal()


def test_an_environment_value_with_a_newline_is_refused_without_it(monkeypatch):
    monkeypatch.setenv("AICODER_TABBYAPI_API_KEY", f"{KEY}\nOTHER=1")
    message = refusal()
    assert "AICODER_TABBYAPI_API_KEY" in message and KEY not in message


def test_a_quoted_value_is_read(secrets_path):
    write(secrets_path, "# my keys\ntabbyapi_api_key: '0123'\n")
    assert secrets.get("tabbyapi_api_key") == "0123"


def test_generating_writes_nothing_until_kept(secrets_path):
    value = secrets.get_or_create("tabbyapi_api_key")
    assert not secrets_path.exists()
    assert secrets.get_or_create("tabbyapi_api_key") == value  # stable within the run
    assert secrets.pending() == ["tabbyapi_api_key"]
    secrets.keep()
    assert oct(secrets_path.stat().st_mode & 0o777) == "0o600"
    assert secrets.get("tabbyapi_api_key") == value and secrets.pending() == []


def test_keep_appends_and_leaves_what_the_user_wrote_byte_for_byte(secrets_path):
    mine = b"# my secrets, do not reformat\nhf_token:   'hf_abc'   # pasted by hand\n"
    secrets_path.write_bytes(mine)
    secrets_path.chmod(0o600)
    before = secrets_path.stat().st_ino
    new = secrets.get_or_create("tabbyapi_admin_key")
    secrets.keep()
    after = secrets_path.read_bytes()
    assert after.startswith(mine)
    assert after[len(mine) :] == f"tabbyapi_admin_key: '{new}'\n".encode()
    assert secrets_path.stat().st_ino != before  # replaced atomically, not rewritten in place
    assert oct(secrets_path.stat().st_mode & 0o777) == "0o600"
    assert list(secrets_path.parent.glob(".secrets-*")) == []
