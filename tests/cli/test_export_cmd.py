"""``keysafe export``: for every format, that format's own reader gets back exactly
what was stored, for hostile values (newlines, quotes, ``$``, backslashes, unicode, a
leading ``#`` or space, carriage returns). Readers: python-dotenv, json, bash and dash
sourcing the file, and GitHub's documented ``$GITHUB_ENV`` syntax (``github_env_read``
below follows the runner's own parser, actions/runner ``SetEnvFileCommand``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysafe.workloads import formats

CANARY = "canary-export-\u00e9-9d1e"
HOSTILE = {
    "NEWLINES": "line one\nline two\n\nthree\n",
    "QUOTES": "it's \"double\" and 'single' \\' \\\"",
    "DOLLAR": "$HOME ${HOME} $(id) `id` $$ ${X:-y}",
    "BACKSLASH": "C:\\path\\n\\t\\\\ end\\",
    "UNICODE": "caf\u00e9 \u2603 \U0001f511 \u200b \u2028 \u0085",
    "HASH": "# not a comment",
    "SPACES": "  leading and trailing  ",
    "CR": "a\r\nb\rc",
    "EQUALS": "a=b==c<<EOF\nEOF",
    "CANARY": CANARY,
}

# Values an environment variable can hold: any text but NUL (and no lone surrogates,
# which are not text).
env_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1, max_size=40)
hostile_bits = st.sampled_from(["\n", "\r", "'", '"', "$", "\\", "#", " ", "`", "=",
                                "<<", "${A}", "\\'", "é", "\u2028", "EOF"])
values = st.lists(st.one_of(env_text, hostile_bits), min_size=1, max_size=8).map("".join)
# As keysafe names them: a letter first (a bare `_` is special to shells).
var_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
scopes = st.dictionaries(var_names, values, min_size=1, max_size=5)
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- readers ----------------------------------------------------------------------------
def github_env_read(text: str) -> dict[str, str]:
    """GitHub's $GITHUB_ENV syntax as the runner (Linux) parses it: NAME=VALUE lines, or
    NAME<<DELIMITER, the value's lines, and a line equal to DELIMITER; the value is the
    text between, without the newline before the delimiter."""
    out: dict[str, str] = {}
    i = 0

    def readline() -> tuple[str | None, int]:
        nonlocal i
        if i >= len(text):
            return None, 0
        j = text.find("\n", i)
        if j < 0:
            line, i = text[i:], len(text)
            return line, 0
        line, i = text[i:j], j + 1
        return line, 1

    line, _ = readline()
    while line is not None:
        if line:
            eq, hd = line.find("="), line.find("<<")
            if eq >= 0 and (hd < 0 or eq < hd):
                k, v = line.split("=", 1)
                out[k] = v
            elif hd >= 0:
                name, delim = line.split("<<", 1)
                assert name
                assert delim
                start = end = i
                tmp, nl = readline()
                while tmp != delim:
                    assert tmp is not None, "delimiter not found"
                    end = i - nl
                    tmp, nl = readline()
                out[name] = text[start:end] if end > start else ""
            else:
                raise AssertionError(f"invalid line {line!r}")
        line, _ = readline()
    return out


def shell_read(path: Path, shell: str) -> dict[str, str]:
    """Source the file in ``shell`` with ``set -a`` and read back the environment."""
    p = subprocess.run([shell, "-c", '. "$1" && env -0', "sh", str(path)],
                       capture_output=True, env={"PATH": os.environ["PATH"]}, timeout=30)
    assert p.returncode == 0, p.stderr
    out = {}
    for item in p.stdout.split(b"\0"):
        if item:
            k, _, v = item.partition(b"=")
            out[k.decode()] = v.decode()
    return out


def read_back(fmt: str, path: Path) -> dict[str, str]:
    if fmt == "dotenv":
        return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}
    if fmt == "json":
        return dict(json.loads(path.read_text(encoding="utf-8")))
    if fmt == "shell":
        return shell_read(path, "bash")
    if fmt == "github-env":
        with path.open(encoding="utf-8", newline="") as fh:  # no newline translation
            return github_env_read(fh.read())
    raise AssertionError(fmt)


TEXT_FORMATS = ["dotenv", "json", "shell", "github-env"]


def write(tmp: Path, text: str) -> Path:
    f = tmp / "out"
    f.write_bytes(text.encode())
    return f


# -- the renderers, for generated values ------------------------------------------------
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_hostile_values_round_trip(fmt: str, tmp_path: Path) -> None:
    got = read_back(fmt, write(tmp_path, formats.render(fmt, HOSTILE)))
    if fmt == "shell":
        got = {k: v for k, v in got.items() if k in HOSTILE}
    assert got == HOSTILE


@pytest.mark.parametrize("fmt", ["dotenv", "json", "github-env"])
@FAST
@given(scope=scopes)
def test_generated_values_round_trip(fmt: str, scope: dict[str, str],
                                     tmp_path: Path) -> None:
    assert read_back(fmt, write(tmp_path, formats.render(fmt, scope))) == scope


@pytest.mark.parametrize("shell", ["bash", "dash", "sh"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scope=scopes)
def test_generated_values_round_trip_in_shells(shell: str, scope: dict[str, str],
                                               tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    got = shell_read(write(tmp_path, formats.render("shell", scope)), shell)
    assert {k: got.get(k) for k in scope} == scope


def test_github_env_delimiter_never_in_value() -> None:
    # A value holding a delimiter-like line is not cut short.
    value = "KEYSAFE_EOF_x\nEOF\n"
    text = formats.github_env({"V": value})
    delim = text.splitlines()[0].split("<<", 1)[1]
    assert delim not in value
    assert github_env_read(text) == {"V": value}


@pytest.mark.parametrize("fmt", ["dotenv", "shell", "github-env"])
def test_nul_is_refused_without_the_value(fmt: str) -> None:
    from keysafe.errors import InvalidValue

    with pytest.raises(InvalidValue) as err:
        formats.render(fmt, {"X": CANARY + "\x00"})
    assert "NUL" in str(err.value)
    assert CANARY not in str(err.value)


# -- the command ----------------------------------------------------------------------
Put = Callable[..., Any]


@pytest.fixture
def stored(put: Put) -> dict[str, str]:
    """The hostile values stored under secret names; -> variable -> value."""
    expected = {}
    for var, value in HOSTILE.items():
        put(var.lower() + "-v", value, "--keep-newline")
        expected[var + "_V"] = value
    put("elsewhere", "not in the scope", org="globex")
    return expected


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_export_file_round_trips(kc: Callable[..., Any], stored: dict[str, str], fmt: str,
                                 tmp_path: Path) -> None:
    out = tmp_path / f"secrets.{fmt}"
    r = kc("export", "--org", "acme", "--format", fmt, "--output", str(out), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["count"] == len(stored)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    got = read_back(fmt, out)
    if fmt == "shell":
        got = {k: v for k, v in got.items() if k in stored}
    assert got == stored
    assert CANARY not in r.err
    assert CANARY not in r.out


def test_export_stdout_append_only_and_keys(kc: Callable[..., Any], stored: dict[str, str],
                                            tmp_path: Path) -> None:
    r = kc("export", "--org", "acme", "--format", "json", "--only", "canary-v,hash-v",
           "--keys", "name")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"canary-v": CANARY, "hash-v": HOSTILE["HASH"]}

    env_file = tmp_path / "github_env"
    env_file.write_text("EARLIER=1\n")
    for name in ("canary-v", "cr-v"):
        r = kc("export", "--org", "acme", "--format", "github-env", "--only", name,
               "--output", str(env_file), "--append")
        assert r.code == 0, r.err
    with env_file.open(newline="") as fh:
        got = github_env_read(fh.read())
    assert got == {"EARLIER": "1", "CANARY_V": CANARY, "CR_V": HOSTILE["CR"]}


def test_export_errors(kc: Callable[..., Any], stored: dict[str, str],
                       tmp_path: Path) -> None:
    assert kc("export", "--org", "acme", "--format", "xml").code == 2
    assert kc("export", "--org", "acme", "--format", "json", "--append").code == 2
    assert kc("export", "--org", "acme", "--format", "external-secret").code == 2
    r = kc("export", "--org", "acme", "--format", "json", "--only", "nope")
    assert r.code == 3
    out = tmp_path / "no" / "such" / "dir" / "x.env"
    r = kc("export", "--org", "acme", "--format", "dotenv", "--output", str(out))
    assert r.code != 0
    assert CANARY not in r.err + r.out


# -- the Kubernetes formats (rendered by keysafe.kube) ------------------------------------
def _kube() -> None:
    try:
        import keysafe.kube  # noqa: F401
    except ImportError:
        pytest.skip("keysafe.kube not merged yet")


def test_k8s_secret_round_trips(kc: Callable[..., Any], stored: dict[str, str],
                                tmp_path: Path) -> None:
    _kube()
    import yaml

    out = tmp_path / "secret.yaml"
    r = kc("export", "--org", "acme", "--format", "k8s-secret", "--name", "app-secrets",
           "--namespace", "prod", "--output", str(out))
    assert r.code == 0, r.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "Secret"
    assert doc["metadata"]["name"] == "app-secrets"
    assert doc["metadata"].get("namespace") == "prod"
    got = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    got.update(doc.get("stringData") or {})
    assert got == stored


def test_external_secret_names_only(kc: Callable[..., Any], stored: dict[str, str],
                                    tmp_path: Path) -> None:
    _kube()
    import yaml

    r = kc("export", "--org", "acme", "--format", "external-secret", "--name", "app",
           "--server-url", "https://keysafe.example", "--refresh-interval", "15m")
    assert r.code == 0, r.err
    docs = [d for d in yaml.safe_load_all(r.out) if d]
    assert {d["kind"] for d in docs} >= {"SecretStore", "ExternalSecret"}
    for value in stored.values():  # the operator fetches values; none are written
        assert value not in r.out
    assert "canary-v" in r.out


def test_external_secret_keys_are_the_variables_export_writes(
        kc: Callable[..., Any], put: Put, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret the operator fills has the keys ``export --format dotenv`` writes:
    the mapping file's variables (``false`` leaves one out), an ``env_var`` tag (what
    ``import`` records for an alias), an alias's own name (``db_password``), the
    catalog's variable for a catalog name."""
    _kube()
    import yaml

    put("openai_api_key", "sk-" + "m" * 30, org="mapped")
    put("db_password", "pw", org="mapped")
    put("hf_api_token", "hf_" + "t" * 32, "--tag", "env_var=HF_TOKEN", org="mapped")
    put("internal", "i", org="mapped")
    mapping = tmp_path / "map.toml"
    mapping.write_text('openai_api_key = "LLM_API_KEY"\ninternal = false\n')
    base = ("export", "--org", "mapped", "--map", str(mapping))
    r = kc(*base, "--format", "external-secret", "--server-url", "https://k.example")
    assert r.code == 0, r.err
    es = list(yaml.safe_load_all(r.out))[1]
    keys = {d["remoteRef"]["key"]: d["secretKey"] for d in es["spec"]["data"]}
    assert keys == {"openai_api_key": "LLM_API_KEY", "db_password": "DB_PASSWORD",
                    "hf_api_token": "HF_TOKEN"}
    dotenv = kc(*base, "--format", "json")
    assert dotenv.code == 0, dotenv.err
    assert sorted(json.loads(dotenv.out)) == sorted(keys.values())
    # The operator sends the service token with each fetch: never over plain http,
    # unless the cluster network is said to be encrypted.
    plain = ("--format", "external-secret", "--server-url", "http://keysafe.keysafe.svc")
    r = kc(*base, *plain)
    assert r.code == 2
    assert "plain http" in r.err
    monkeypatch.setenv("KEYSAFE_ALLOW_HTTP", "1")
    assert kc(*base, *plain).code == 0


def test_external_secret_provider_store_needs_a_store_the_operator_reads(
        kc: Callable[..., Any], stored: dict[str, str]) -> None:
    """The embedded store is not one the operator can read: exit 9, saying which stores
    are (the AWS, Vault, GCP and Azure paths are tested against those stores). Bad
    combinations are usage errors; nothing is written."""
    _kube()
    r = kc("export", "--org", "acme", "--format", "external-secret", "--provider", "store")
    assert r.code == 9
    assert "cannot read the sqlite store" in r.err
    assert "aws-sm, aws-ssm, vault, gcp and azure" in r.err
    for args, hint in [(("--provider", "nope"), "not keysafe or store"),
                       (("--provider", "store", "--server-url", "https://k.example"),
                        "not with --server-url"),
                       (("--store", "x", "--server-url", "https://k.example"),
                        "--store needs --provider store")]:
        r = kc("export", "--org", "acme", "--format", "external-secret", *args)
        assert r.code == 2, args
        assert hint in " ".join(r.err.replace("│", " ").split())  # rich's box, unwrapped
    r = kc("export", "--org", "acme", "--format", "json", "--provider", "store")
    assert r.code == 2
    assert "for --format external-secret" in " ".join(r.err.replace("│", " ").split())
    for value in stored.values():
        assert value not in r.out + r.err


def test_export_leaves_out_a_destroyed_current_version(kc: Callable[..., Any],
                                                       stored: dict[str, str],
                                                       put: Put) -> None:
    from keysafe import SecretManager

    put("gone", "old-value")
    put("gone", "shredded-value")
    with SecretManager.from_env() as mgr:  # the library allows it, as Vault does; the CLI not
        mgr.destroy("gone", [2], "acme")
    r = kc("export", "--org", "acme", "--format", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == stored
    assert "left out gone: no current value to read" in r.err


def test_github_env_registers_masks_inside_actions_only(kc: Callable[..., Any], put: Put,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    put("api_token", "tok-12%0A34567890")
    put("pem", "-----BEGIN-----\nline-two-secret\n-----END-----", "--keep-newline")
    out = tmp_path / "github_env"
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    r = kc("export", "--org", "acme", "--format", "github-env", "--output", str(out))
    assert r.code == 0, r.err
    assert "::add-mask::" not in r.out
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    r = kc("export", "--org", "acme", "--format", "github-env", "--output", str(out))
    assert r.code == 0, r.err
    assert sorted(r.out.splitlines()) == sorted([
        "::add-mask::tok-12%250A34567890", "::add-mask::-----BEGIN-----",
        "::add-mask::line-two-secret", "::add-mask::-----END-----"])
    j = kc("export", "--org", "acme", "--format", "github-env", "--output", str(out),
           "--json")
    assert j.code == 0, j.err
    assert json.loads(j.out)["count"] == 2
    assert "were not registered as masks" in j.err


def test_json_credentials_also_give_their_fields_as_variables(kc: Callable[..., Any],
                                                              put: Put) -> None:
    """Spec 003's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: the aws_access_key pair is
    given whole (AWS_ACCESS_KEY) and as the two variables the SDKs read; a secret that
    is its own variable wins over a field of another."""
    pair = {"access_key_id": "AKIA" + "B" * 16, "secret_access_key": CANARY + "x" * 20}
    put("aws_access_key", json.dumps(pair), "--credentials")
    put("slack", json.dumps({"bot_token": "xoxb-1-2-abc", "signing_secret": "s" * 32,
                             "app_token": "xapp-1-A-2-abc"}), "--credentials")
    r = kc("export", "--org", "acme", "--format", "json")
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert json.loads(got["AWS_ACCESS_KEY"]) == pair
    assert got["AWS_ACCESS_KEY_ID"] == pair["access_key_id"]
    assert got["AWS_SECRET_ACCESS_KEY"] == pair["secret_access_key"]
    assert got["SLACK_BOT_TOKEN"] == "xoxb-1-2-abc"
    assert got["SLACK_APP_TOKEN"] == "xapp-1-A-2-abc"
    # `run` gives the same variables to the command.
    r = kc("run", "--org", "acme", "--", "sh", "-c", 'test "$AWS_ACCESS_KEY_ID" = "$0"',
           pair["access_key_id"])
    assert r.code == 0, r.err
    # A secret of its own for the variable wins; --keys name gives names only.
    put("slack_bot_token", "xoxb-9999-own-token")
    got = json.loads(kc("export", "--org", "acme", "--format", "json").out)
    assert got["SLACK_BOT_TOKEN"] == "xoxb-9999-own-token"
    by_name = json.loads(kc("export", "--org", "acme", "--format", "json", "--keys",
                            "name").out)
    assert "AWS_ACCESS_KEY_ID" not in by_name
    assert CANARY not in r.err


def test_mapping_file_gives_json_credentials_field_by_field(kc: Callable[..., Any], put: Put,
                                                             tmp_path: Path) -> None:
    """A table in the mapping file names fields of JSON credentials and their variables
    (spec 002's grouped `api-keys`): those fields are given, not the whole JSON and not
    the catalog's field variables; `run`, every export format and the ExternalSecret
    (a `remoteRef.property` each, passed to the server as `field=`) agree."""
    _kube()
    import yaml

    keys = {"anthropic": "sk-ant-" + "a" * 30, "openai": "sk-" + "o" * 40,
            "partner": CANARY, "port": 5432}
    put("api-keys", json.dumps(keys), "--credentials", org="grouped")
    pair = {"access_key_id": "AKIA" + "C" * 16, "secret_access_key": "s" * 40}
    put("aws_access_key", json.dumps(pair), "--credentials", org="grouped")
    put("openai_api_key", "sk-own-" + "k" * 30, org="grouped")
    toml = tmp_path / "map.toml"
    toml.write_text('"api-keys" = { anthropic = "ANTHROPIC_API_KEY", openai = "OPENAI_KEY",'
                    ' port = "API_PORT" }\n[aws_access_key]\naccess_key_id = "AWS_KEY"\n')
    yml = tmp_path / "map.yaml"
    yml.write_text("api-keys:\n  anthropic: ANTHROPIC_API_KEY\n  openai: OPENAI_KEY\n"
                   "  port: API_PORT\naws_access_key:\n  access_key_id: AWS_KEY\n")
    want = {"ANTHROPIC_API_KEY": keys["anthropic"], "OPENAI_KEY": keys["openai"],
            "API_PORT": "5432", "AWS_KEY": pair["access_key_id"],
            "OPENAI_API_KEY": "sk-own-" + "k" * 30}
    for mapping in (toml, yml):
        r = kc("export", "--org", "grouped", "--map", str(mapping), "--format", "json")
        assert r.code == 0, r.err
        assert json.loads(r.out) == want  # nothing else: not API_KEYS, not the pair whole
        assert CANARY not in r.out
    r = kc("export", "--org", "grouped", "--map", str(toml), "--format", "dotenv")
    assert dotenv_values(stream=__import__("io").StringIO(r.out)) == want
    r = kc("run", "--org", "grouped", "--map", str(toml), "--", "sh", "-c",
           'test "$ANTHROPIC_API_KEY" = "$0" && test -z "$API_KEYS$AWS_ACCESS_KEY_ID"',
           keys["anthropic"])
    assert r.code == 0, r.err

    # The ExternalSecret: one entry per field, its property the field.
    r = kc("export", "--org", "grouped", "--map", str(toml), "--format", "external-secret",
           "--server-url", "https://k.example")
    store, es = [d for d in yaml.safe_load_all(r.out) if d]
    assert store["spec"]["provider"]["webhook"]["url"] == (
        "https://k.example/api/secrets/grouped/{{ .remoteRef.key }}/value"
        "?field={{ .remoteRef.property }}")
    data = {d["secretKey"]: d["remoteRef"] for d in es["spec"]["data"]}
    assert data == {"ANTHROPIC_API_KEY": {"key": "api-keys", "property": "anthropic"},
                    "OPENAI_KEY": {"key": "api-keys", "property": "openai"},
                    "API_PORT": {"key": "api-keys", "property": "port"},
                    "AWS_KEY": {"key": "aws_access_key", "property": "access_key_id"},
                    "OPENAI_API_KEY": {"key": "openai_api_key"}}
    assert CANARY not in r.out


def test_mapping_file_field_errors_name_the_problem(kc: Callable[..., Any], put: Put,
                                                    tmp_path: Path) -> None:
    put("api-keys", json.dumps({"anthropic": "sk-ant-" + "z" * 30}), "--credentials",
        org="grouped")
    put("plain", CANARY, org="grouped")
    put("openai_api_key", "sk-" + "q" * 40, org="grouped")
    cases = [
        ('"api-keys" = { mistral = "MISTRAL_API_KEY" }\n', 3,
         "api-keys has no credential field 'mistral'"),
        ('plain = { x = "X" }\n', 2, "plain does not hold JSON credentials"),
        ('"api-keys" = { anthropic = "OPENAI_API_KEY" }\n', 2,
         "openai_api_key and field 'anthropic' of api-keys would both set OPENAI_API_KEY"),
        ('"api-keys" = {}\n', 2, "the table of fields is empty"),
        ('"api-keys" = { anthropic = "not a var" }\n', 2, "is not an environment variable"),
        ('"api-keys" = { "" = "X" }\n', 2, "a field name is empty"),
        # A field may not take a variable the catalog gives a field of a whole secret.
        ('"api-keys" = { anthropic = "AWS_ACCESS_KEY_ID" }\n', 2,
         "field 'access_key_id' of aws_access_key and field 'anthropic' of api-keys would "
         "both set AWS_ACCESS_KEY_ID"),
    ]
    put("aws_access_key", json.dumps({"access_key_id": "AKIA" + "D" * 16,
                                      "secret_access_key": "t" * 40}), "--credentials",
        org="grouped")
    for i, (text, code, words) in enumerate(cases):
        f = tmp_path / f"m{i}.toml"
        f.write_text(text)
        r = kc("export", "--org", "grouped", "--map", str(f), "--format", "json")
        assert r.code == code, (text, r.err)
        assert words in " ".join(r.err.replace("│", " ").split()), (text, r.err)
        assert CANARY not in r.out + r.err


def test_a_table_for_a_secret_the_scope_lacks_is_named(kc: Callable[..., Any], put: Put,
                                                       tmp_path: Path) -> None:
    """An unquoted dotted TOML key is a table: the warning says so."""
    put("db.prod", "postgresql://u:p@h/db", org="grouped")
    f = tmp_path / "m.toml"
    f.write_text('db.prod = "DB"\n')
    for fmt in ("json", "external-secret"):
        r = kc("export", "--org", "grouped", "--map", str(f), "--format", fmt,
               "--server-url", "https://k.example") if fmt != "json" else \
            kc("export", "--org", "grouped", "--map", str(f), "--format", fmt)
        assert r.code == 0, r.err
        assert "names fields of db, which the scope does not hold" in r.err
        assert 'quote a secret name with a dot' in r.err
    r = kc("run", "--org", "grouped", "--map", str(f), "--", "true")
    assert r.code == 0, r.err
    assert "names fields of db" in r.err
