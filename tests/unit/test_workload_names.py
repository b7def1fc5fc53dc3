"""Secret names as variables, mapping files, references, and run's short parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysafe.catalog import Catalog
from keysafe.errors import InvalidName, InvalidValue
from keysafe.workloads.names import default_env_var, env_names, load_mapping, parse_reference
from keysafe.workloads.run import parse_run


def test_default_variables() -> None:
    cat = Catalog.builtin()
    assert default_env_var("openai_api_key", cat) == "OPENAI_API_KEY"
    assert default_env_var("openai-api-key", cat) == "OPENAI_API_KEY"
    assert default_env_var("billing.webhook-secret", cat) == "BILLING_WEBHOOK_SECRET"
    assert default_env_var("9lives", cat) == "_9LIVES"
    for entry in cat:  # every catalog name maps to its catalog variable
        assert default_env_var(entry.name, cat) == entry.env_var


def test_mapping_and_collisions(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('"a-b" = "AB"\nhidden = false\n')
    m = load_mapping(f)
    assert env_names(["a-b", "a_b", "hidden"], None, m.names) == {"a-b": "AB", "a_b": "A_B"}
    assert m.fields == {}
    with pytest.raises(InvalidValue, match="both set A_B"):
        env_names(["a-b", "a_b"], None, None)
    for text, suffix in [("x = 1\n", ".toml"), ("x: [1]\n", ".yaml"), ("x: 'A B'\n", ".yml"),
                         ("x = \n", ".toml"), ("- a\n", ".yaml"), ("{}", ".json"),
                         ("x = {}\n", ".toml"), ("x: {f: 1}\n", ".yaml"),
                         ("[x]\nf = false\n", ".toml"), ("x: {on: A}\n", ".yaml"),
                         ("null: A\n", ".yaml"), ("x: {1: A}\n", ".yaml")]:
        bad = tmp_path / f"bad{suffix}"
        bad.write_text(text)
        with pytest.raises(InvalidValue, match=str(bad)):
            load_mapping(bad)


def test_mapping_tables_name_fields(tmp_path: Path) -> None:
    """A table is a JSON secret given field by field: the secret itself is left out."""
    f = tmp_path / "m.toml"
    f.write_text('db = { url = "DATABASE_URL", "pass.word" = "DB_PASS" }\nkey = "K"\n')
    m = load_mapping(f)
    assert m.names == {"db": None, "key": "K"}
    assert m.fields == {"db": {"url": "DATABASE_URL", "pass.word": "DB_PASS"}}


def test_references() -> None:
    r = parse_reference("keysafe://acme/llm/openai_api_key", "X")
    assert (r.org, r.domain, r.name) == ("acme", "llm", "openai_api_key")
    assert str(r) == "keysafe://acme/llm/openai_api_key"
    r = parse_reference("keysafe://acme/openai_api_key", "X")
    assert (r.org, r.domain, r.name) == ("acme", None, "openai_api_key")
    for bad in ("keysafe://acme", "keysafe://a/b/c/d", "keysafe://a/../x", "keysafe://a/b c"):
        with pytest.raises(InvalidName, match="X"):
            parse_reference(bad, "X")


def test_parse_run() -> None:
    o = parse_run(["--org", "acme", "--only=a,b", "--only", "c", "--watch", "--interval",
                   "2", "--", "cmd", "--org", "x"])
    assert o is not None
    assert (o.org, o.only, o.watch, o.interval, o.command) == (
        "acme", ["a,b", "c"], True, 2.0, ["cmd", "--org", "x"])
    assert parse_run(["--org", "a", "ls", "-l"]).command == ["ls", "-l"]  # type: ignore[union-attr]
    for args in (["--help"], ["--org", "a"], ["--bogus", "--", "x"], ["--org", "a", "--org",
                 "b", "--", "x"], ["--interval", "soon", "--", "x"], ["--org"]):
        assert parse_run(args) is None, args
