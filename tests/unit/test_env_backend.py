"""The read-only env/.env backend (keysafe.backends.env): name mapping through the
catalog, unscoped and scoped naming, sources and precedence, listing, read-only writes.

Focused tests rather than the conformance suite, which assumes a writable store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from keysafe import ConfigError, NotFound, SecretManager, Unsupported
from keysafe.backends.base import Destroyable, Recoverable, Versioned, WriteContext
from keysafe.backends.env import READ_ONLY, EnvBackend, pinned_fields, read_dotenv
from keysafe.config import load_settings

OPENAI = "sk-" + "A1b2C3d4E5" * 3  # shaped like an OpenAI key, not a real one
OPENAI_ACME = "sk-" + "Z9y8X7w6V5" * 3
HF = "hf_" + "abcdefghij" * 3 + "12"
P = "keysafe/local/acme/shared/"


@pytest.fixture
def work(tmp_home: Path) -> Path:
    """A clean working directory (tmp_home also sets KEYSAFE_HOME to a temp dir)."""
    return Path.cwd()


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def backend(work: Path, **kw: object) -> EnvBackend:
    kw.setdefault("environ", {})
    return EnvBackend(**kw)  # type: ignore[arg-type]


# -- names --------------------------------------------------------------------------------
def test_catalog_names_map_to_their_env_vars(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI, DB_PASSWORD="pw")
    b = backend(work)
    assert b.get(P + "openai_api_key") == (OPENAI, 1)
    # A name the catalog does not know is its upper-cased self.
    assert b.get(P + "db_password") == ("pw", 1)
    assert b.variables_for("openai-api-key") == ["OPENAI_API_KEY"]
    assert b.variables_for("my.thing-x") == ["MY_THING_X"]


def test_aliases_are_read_in_catalog_order(work: Path):
    write_env(work / ".env", HF_TOKEN=HF)
    b = backend(work)
    assert b.get(P + "hf_api_token") == (HF, 1)
    assert b.variables_for("hf_api_token")[:2] == ["HF_API_TOKEN", "HF_TOKEN"]
    # The catalog's own variable wins over an alias when both are set.
    write_env(work / ".env", HF_TOKEN="hf_" + "z" * 32, HF_API_TOKEN=HF)
    assert b.get(P + "hf_api_token") == (HF, 1)


def test_spec_000_template_and_dashed_names(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work, naming="/{app}/{env}/org-{org}/{domain}/{name}", app="ragstar")
    assert b.get("/ragstar/local/org-123/llm/openai-api-key") == (OPENAI, 1)
    assert [m.path for m in b.list("/ragstar/local/org-123/llm/")] == [
        "/ragstar/local/org-123/llm/openai_api_key"]


def test_paths_of_another_template_are_not_found(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    with pytest.raises(NotFound):
        backend(work).get("not/a/keysafe/path/at/all/x")


# -- sources ------------------------------------------------------------------------------
def test_process_environment_exposes_only_catalog_variables(work: Path):
    env = {"OPENAI_API_KEY": OPENAI, "PATH": "/usr/bin", "HOME": "/root",
           "MY_SERVICE_TOKEN": "t0k", "KEYSAFE_MASTER_KEY": "never"}
    b = backend(work, environ=env, files=[])
    assert b.get(P + "openai_api_key")[0] == OPENAI
    for name in ("path", "home", "my_service_token", "keysafe_master_key"):
        with pytest.raises(NotFound):
            b.get(P + name)
    assert [m.path for m in b.list(P)] == [P + "openai_api_key"]
    wider = backend(work, environ=env, files=[], include=["MY_*"])
    assert wider.get(P + "my_service_token")[0] == "t0k"


def test_real_os_environ_is_read_live(work: Path, monkeypatch: pytest.MonkeyPatch):
    b = EnvBackend(files=[])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + "x" * 24)
    assert b.get(P + "anthropic_api_key")[0] == "sk-ant-" + "x" * 24
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(NotFound):
        b.get(P + "anthropic_api_key")
    off = EnvBackend(files=[], environ=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + "x" * 24)
    with pytest.raises(NotFound):
        off.get(P + "anthropic_api_key")


def test_keysafe_settings_in_files_are_never_secrets(work: Path):
    write_env(work / ".env", KEYSAFE_MASTER_KEY="k", KEYSAFE_HOME="/x", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    with pytest.raises(NotFound):
        b.get(P + "keysafe_master_key")
    assert [m.path for m in b.list(P)] == [P + "openai_api_key"]


def test_precedence_environment_over_later_file_over_earlier(work: Path):
    write_env(work / ".env", OPENAI_API_KEY="sk-" + "1" * 30, GITHUB_TOKEN="ghp_" + "a" * 36)
    write_env(work / ".env.local", OPENAI_API_KEY="sk-" + "2" * 30, N8N_API_KEY="n8n")
    b = backend(work, files=[".env", ".env.local"])
    assert b.get(P + "openai_api_key")[0] == "sk-" + "2" * 30
    assert b.get(P + "github_token")[0] == "ghp_" + "a" * 36
    assert b.get(P + "n8n_api_key")[0] == "n8n"
    over = backend(work, files=[".env", ".env.local"], environ={"OPENAI_API_KEY": OPENAI})
    assert over.get(P + "openai_api_key")[0] == OPENAI
    assert over.describe(P + "openai_api_key").tags["source"] == "environment"
    assert b.describe(P + "openai_api_key").tags == {
        "source": str(work / ".env.local"), "variable": "OPENAI_API_KEY"}


def test_missing_files_are_skipped_and_a_directory_is_a_config_error(work: Path):
    b = backend(work)  # default .env, absent
    assert b.list(P) == []
    b.ping()
    assert backend(work, files=["nope.env"]).list(P) == []
    (work / "dir.env").mkdir()
    with pytest.raises(ConfigError, match="directory"):
        backend(work, files=["dir.env"]).get(P + "openai_api_key")


def test_relative_files_are_fixed_when_the_backend_is_built(work: Path, tmp_path: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    os.chdir(tmp_path)
    assert b.get(P + "openai_api_key")[0] == OPENAI


def test_empty_values_and_bare_names_count_as_unset(work: Path):
    (work / ".env").write_text("OPENAI_API_KEY=\nANTHROPIC_API_KEY\nGROQ_API_KEY=''\n")
    b = backend(work)
    for name in ("openai_api_key", "anthropic_api_key", "groq_api_key"):
        with pytest.raises(NotFound):
            b.get(P + name)


def test_dotenv_syntax_is_python_dotenv(work: Path):
    (work / ".env").write_text(
        "# a comment\n"
        "export OPENAI_API_KEY='sk-abc # not a comment'\n"
        'SLACK_SIGNING_SECRET="multi\\nline"\n'
        "BASE=hello\n"
        "DB_PASSWORD=${BASE}-world\n")
    b = backend(work)
    assert b.get(P + "openai_api_key")[0] == "sk-abc # not a comment"
    assert b.get(P + "slack_signing_secret")[0] == "multi\nline"
    assert b.get(P + "db_password")[0] == "hello-world"
    literal = backend(work, interpolate=False)
    assert literal.get(P + "db_password")[0] == "${BASE}-world"
    assert read_dotenv(work / ".env")["BASE"] == "hello"
    with pytest.raises(ConfigError, match="no such file"):
        read_dotenv(work / "missing.env")


def test_an_edited_file_is_read_again(work: Path):
    f = write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    assert b.get(P + "openai_api_key")[0] == OPENAI
    write_env(f, OPENAI_API_KEY=OPENAI_ACME + "x")
    later = time.time() + 5
    os.utime(f, (later, later))
    assert b.get(P + "openai_api_key")[0] == OPENAI_ACME + "x"


# -- versions, metadata, read-only ---------------------------------------------------------
def test_version_is_always_one(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    assert b.get(P + "openai_api_key", version=1) == (OPENAI, 1)
    with pytest.raises(NotFound, match="no version 2"):
        b.get(P + "openai_api_key", version=2)
    meta = b.describe(P + "openai_api_key")
    assert (meta.current_version, meta.versions, meta.secret_type) == (1, 1, "api_key")
    assert meta.deleted_at is None


def test_writes_are_unsupported_with_a_pointer_to_import(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    ctx = WriteContext.make("tester")
    with pytest.raises(Unsupported) as put:
        b.put(P + "openai_api_key", "x", ctx=ctx)
    assert str(put.value) == READ_ONLY
    assert "keysafe import" in str(put.value)
    with pytest.raises(Unsupported):
        b.delete(P + "openai_api_key", ctx=ctx)
    assert b.get(P + "openai_api_key")[0] == OPENAI


def test_no_optional_capabilities(work: Path):
    b = backend(work)
    for cap in (Versioned, Destroyable, Recoverable):
        assert not isinstance(b, cap)


def test_values_never_in_repr_or_metadata(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI)
    b = backend(work)
    assert OPENAI not in repr(b)
    assert OPENAI not in repr(b.describe(P + "openai_api_key"))
    assert OPENAI not in repr(b.list(P))


# -- listing --------------------------------------------------------------------------------
def test_unscoped_list_needs_an_org_and_uses_the_default_domain(work: Path):
    write_env(work / ".env", OPENAI_API_KEY=OPENAI, HF_TOKEN=HF, MY_FLAG="1")
    b = backend(work)
    assert [m.path for m in b.list(P)] == [P + "hf_api_token", P + "my_flag",
                                          P + "openai_api_key"]
    # Any org reads the same values (spec 003/004's LocalSecretManager, for local work).
    assert b.get("keysafe/local/globex/card-services/openai_api_key")[0] == OPENAI
    assert [m.path for m in b.list("keysafe/local/globex/llm/")] == [
        "keysafe/local/globex/llm/hf_api_token", "keysafe/local/globex/llm/my_flag",
        "keysafe/local/globex/llm/openai_api_key"]
    assert b.list("keysafe/local/") == []  # no org given: nothing to name the paths by
    assert [m.path for m in b.list(P + "open")] == [P + "openai_api_key"]
    # The app and environment are not part of a variable's name: .env files are per
    # environment already.
    assert len(b.list("other-app/prod/acme/")) == 3


def test_pinned_fields():
    t = "{app}/{env}/{org}/{domain}/{name}"
    assert pinned_fields(t, "a/dev/acme/") == {"app": "a", "env": "dev", "org": "acme"}
    assert pinned_fields(t, "a/dev/ac") == {"app": "a", "env": "dev"}
    assert pinned_fields(t, "") == {}
    assert pinned_fields("/{app}/{env}/org-{org}/{domain}/{name}", "/r/l/org-") == {
        "app": "r", "env": "l"}
    assert pinned_fields("/{app}/{env}/org-{org}/{domain}/{name}", "/r/l/xx-") is None


# -- scoped ---------------------------------------------------------------------------------
def test_scoped_variables_isolate_orgs_and_domains(work: Path):
    write_env(work / ".env",
              ACME_CORP__CARD_SERVICES__OPENAI_API_KEY=OPENAI_ACME,
              ACME_CORP__OPENAI_API_KEY=OPENAI,
              GLOBEX__SHARED__HF_TOKEN=HF,
              OPENAI_API_KEY="sk-" + "u" * 30)
    b = backend(work, scoped=True)
    assert b.get("keysafe/local/acme-corp/card-services/openai_api_key")[0] == OPENAI_ACME
    # ORG__VAR is the org's default domain.
    assert b.get("keysafe/local/acme-corp/shared/openai_api_key")[0] == OPENAI
    assert b.get("keysafe/local/globex/shared/hf_api_token")[0] == HF
    # No org reads another's variables, nor an unscoped one.
    for path in ("keysafe/local/globex/shared/openai_api_key",
                 "keysafe/local/initech/shared/openai_api_key",
                 "keysafe/local/acme-corp/billing/openai_api_key"):
        with pytest.raises(NotFound):
            b.get(path)
    assert [m.path for m in b.list("keysafe/local/acme-corp/")] == [
        "keysafe/local/acme-corp/card-services/openai_api_key",
        "keysafe/local/acme-corp/shared/openai_api_key"]
    assert [m.path for m in b.list("keysafe/local/")] == [
        "keysafe/local/acme-corp/card-services/openai_api_key",
        "keysafe/local/acme-corp/shared/openai_api_key",
        "keysafe/local/globex/shared/hf_api_token"]
    assert b.variable_for(b.naming.parse("keysafe/local/acme-corp/card-services/x")) == (
        "ACME_CORP__CARD_SERVICES__X")


def test_scoped_list_keeps_the_callers_spelling_of_the_org(work: Path):
    write_env(work / ".env", ACME_CORP__OPENAI_API_KEY=OPENAI)
    b = backend(work, scoped=True)
    assert [m.path for m in b.list("keysafe/local/acme_corp/")] == [
        "keysafe/local/acme_corp/shared/openai_api_key"]
    assert b.list("keysafe/local/acme/") == []


def test_scoped_orgs_that_cannot_be_named_have_no_secrets(work: Path):
    write_env(work / ".env", A__B__SHARED__OPENAI_API_KEY=OPENAI)
    b = backend(work, scoped=True)
    with pytest.raises(NotFound):
        b.get("keysafe/local/a--b/shared/openai_api_key")
    assert b.list("keysafe/local/") == []


def test_scoped_prefix_and_numeric_orgs(work: Path):
    write_env(work / ".env", T_123__LLM__OPENAI_API_KEY=OPENAI)
    b = backend(work, scoped=True, prefix="t_", app="ragstar",
                naming="/{app}/{env}/org-{org}/{domain}/{name}")
    assert b.get("/ragstar/local/org-123/llm/openai-api-key")[0] == OPENAI
    assert [m.path for m in b.list("/ragstar/local/org-")] == [
        "/ragstar/local/org-123/llm/openai_api_key"]
    with pytest.raises(ConfigError):
        EnvBackend(prefix="bad-prefix")


def test_scoped_process_variables_follow_the_catalog_rule(work: Path):
    env = {"ACME__OPENAI_API_KEY": OPENAI, "ACME__SHARED__CUSTOM": "c"}
    b = backend(work, scoped=True, files=[], environ=env)
    assert b.get(P + "openai_api_key")[0] == OPENAI
    with pytest.raises(NotFound):
        b.get(P + "custom")
    assert backend(work, scoped=True, files=[], environ=env,
                   include=["CUSTOM"]).get(P + "custom")[0] == "c"


# -- configuration --------------------------------------------------------------------------
def _settings(work: Path, profile: str) -> object:
    (work / "keysafe.toml").write_text(
        '[keysafe]\napp = "agentfoundry"\n\n[keysafe.profiles.local]\nbackend = "env"\n'
        + profile)
    return load_settings()


def test_from_settings_reads_the_profile(work: Path):
    write_env(work / ".env.local", ACME__OPENAI_API_KEY=OPENAI)
    _settings(work, 'files = [".env.local"]\nscoped = true\nenviron = false\n')
    with SecretManager.from_env() as m:
        assert isinstance(m.backend, EnvBackend)
        assert m.backend.scoped
        assert m.get("openai_api_key", "acme") == OPENAI
        assert [x.path for x in m.list("acme")] == [
            "agentfoundry/local/acme/shared/openai_api_key"]
        with pytest.raises(Unsupported):
            m.put("openai_api_key", OPENAI, "acme")
        with pytest.raises(Unsupported):
            m.versions("openai_api_key", "acme")
        assert m.has("openai_api_key", "acme")
        assert not m.has("openai_api_key", "globex")


@pytest.mark.parametrize(("profile", "message"), [
    ("colour = 1\n", "unknown option 'colour'"),
    ("files = 3\n", "files must be a list"),
    ('scoped = "yes"\n', "scoped must be true or false"),
    ("prefix = 1\n", "prefix must be a string"),
])
def test_bad_options_are_config_errors(work: Path, profile: str, message: str):
    _settings(work, profile)
    with pytest.raises(ConfigError, match=message):
        SecretManager.from_env()


def test_spec_004_local_secret_manager(work: Path):
    """spec 004: `LocalSecretManager()` reads .env: here, the env backend by default."""
    write_env(work / ".env", TEST_SECRET="local-value")
    m = SecretManager(EnvBackend(environ={}))
    assert m.get("TEST_SECRET", "any-org") == "local-value"
    assert m.get("test_secret", "another-org") == "local-value"
