"""Where `put` takes the value from: stdin, the no-echo prompt, or --value (warned)."""

from __future__ import annotations

import pytest

from keysafe.cli import output


def test_value_from_stdin_strips_one_newline(ks):
    r = ks("put", "k", "--org", "acme", input="from stdin\n")
    assert r.code == 0, r.err
    assert "warning" not in r.err
    assert ks("get", "k", "--org", "acme").out == "from stdin"


def test_stdin_keep_newline_and_multiline(ks):
    pem = "-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----\n"
    assert ks("put", "pem", "--org", "acme", "--keep-newline", input=pem).code == 0
    assert ks("get", "pem", "--org", "acme").out == pem
    assert ks("put", "pem2", "--org", "acme", input=pem).code == 0
    assert ks("get", "pem2", "--org", "acme").out == pem[:-1]


def test_stdin_must_be_utf8(ks):
    r = ks("put", "k", "--org", "acme", input=b"\xff\xfe\x00")
    assert r.code == 2
    assert "not UTF-8" in r.err


def test_unicode_value_roundtrip(ks):
    assert ks("put", "k", "--org", "acme", input="pässwörd ✓").code == 0
    assert ks("get", "k", "--org", "acme").out == "pässwörd ✓"


def test_value_from_prompt(cli, monkeypatch):
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    r = cli("put", "k", "--org", "acme", input="typed secret\ntyped secret\n")
    assert r.exit_code == 0, r.stderr
    assert "Value" in r.stderr
    assert "Repeat for confirmation" in r.stderr
    assert "typed secret" not in r.stderr + r.stdout  # no echo
    monkeypatch.setattr(output, "stdin_is_tty", lambda: False)
    assert cli("get", "k", "--org", "acme").stdout == "typed secret"


def test_prompt_confirmation_must_match(cli, monkeypatch):
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    r = cli("put", "k", "--org", "acme", input="one\ntwo\nthree\nthree\n")
    assert r.exit_code == 0, r.stderr
    assert "do not match" in r.stderr
    monkeypatch.setattr(output, "stdin_is_tty", lambda: False)
    assert cli("get", "k", "--org", "acme").stdout == "three"


def test_prompt_for_credentials(cli, monkeypatch):
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    doc = '{"bot_token": "xoxb-1"}'
    r = cli("put", "slack", "--org", "acme", "--credentials", input=f"{doc}\n{doc}\n")
    assert r.exit_code == 0, r.stderr
    assert "Credentials (a JSON object)" in r.stderr
    assert cli("get", "slack", "--org", "acme", "--field", "bot_token").stdout == "xoxb-1"


def test_bad_name_fails_before_the_prompt(cli, monkeypatch):
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    r = cli("put", "bad/name", "--org", "acme", input="never asked\nnever asked\n")
    assert r.exit_code == 2
    assert "Value" not in r.stderr


def test_value_flag_warns_on_stderr(ks):
    r = ks("put", "k", "--org", "acme", "--value", "argv-value")
    assert r.code == 0, r.err
    assert "keysafe: warning:" in r.err
    assert "shell history" in r.err
    assert "argv-value" not in r.err + r.out
    assert ks("get", "k", "--org", "acme").out == "argv-value"


def test_value_flag_wins_over_stdin(ks):
    assert ks("put", "k", "--org", "acme", "--value", "flag", input="stdin").code == 0
    assert ks("get", "k", "--org", "acme").out == "flag"


@pytest.mark.parametrize("args", [
    ["--merge"],
    ["--credentials", "--merge", "--expected-version", "1"],
    ["--credentials", "--merge", "--description", "d"],
])
def test_merge_misuse_is_usage_error(ks, args):
    r = ks("put", "k", "--org", "acme", *args, input="{}")
    assert r.code == 2


def test_value_as_an_argument_is_refused_without_echo(ks):
    r = ks("put", "k", "oops-a-secret", "--org", "acme")
    assert r.code == 2
    assert "put takes no value argument" in r.err
    assert "oops-a-secret" not in r.err + r.out
    assert ks("get", "k", "--org", "acme").code == 3


def test_credentials_nested_too_deeply_are_refused(ks):
    """Under the size limit but deeper than Python's JSON parser goes: a named error
    (exit 2), not a RecursionError; and a stored value like it reads the same way."""
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    r = ks("put", "deep", "--org", "acme", "--credentials", input=deep)
    assert r.code == 2
    assert "nested too deeply" in r.err
    assert ks("ls", "--org", "acme", "--json").json() == []
    assert ks("put", "deep", "--org", "acme", input=deep).code == 0
    r = ks("get", "deep", "--org", "acme", "--field", "a")
    assert r.code == 2
    assert "nested too deeply" in r.err


@pytest.mark.parametrize("extra", [["--value", "x"], ["--generate"]])
def test_a_bad_name_on_a_fresh_home_creates_nothing(ks, home, extra):
    """Refused before the store is opened: no master key, no database (bad input
    changes nothing)."""
    r = ks("put", "b@d", "--org", "acme", *extra)
    assert r.code == 2
    assert "contains '@'" in r.err
    assert not home.exists()
