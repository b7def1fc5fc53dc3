"""Tests for settings: env over keysafe.toml over defaults, with sources (keysafe.config)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from keysafe.config import Settings, load_settings, profile_for, url_origin
from keysafe.errors import ConfigError

KEY = base64.b64encode(bytes(range(32))).decode()


def write_toml(where: Path, text: str) -> Path:
    path = where / "keysafe.toml"
    path.write_text(text)
    return path


def load(home: Path, **env: str) -> Settings:
    return load_settings({"KEYSAFE_HOME": str(home), **env})


def shown(settings: Settings) -> dict[str, tuple[str, str]]:
    return {name: (value, source) for name, value, source in settings.describe()}


# -- precedence and sources -------------------------------------------------------------
def test_defaults(tmp_home: Path) -> None:
    s = load(tmp_home)
    assert (s.env, s.app, s.backend) == ("local", "keysafe", "sqlite")
    assert s.naming_template == "{app}/{env}/{org}/{domain}/{name}"
    assert s.default_domain == "shared"
    assert s.max_value_bytes == 64 * 1024
    assert s.max_versions == 10
    assert s.recovery_window_days == 7
    assert s.audit_required is True
    assert s.sqlite_synchronous == "FULL"
    assert s.home == tmp_home
    assert s.sqlite_path == tmp_home / "keysafe.db"
    assert s.key_file == tmp_home / "master.key"
    assert s.config_file is None
    rows = shown(s)
    assert rows["app"] == ("keysafe", "default")
    assert rows["home"] == (str(tmp_home), "env KEYSAFE_HOME")


def test_env_over_file_over_defaults(tmp_home: Path) -> None:
    cfg = write_toml(tmp_home, 'app = "from-file"\nbackend = "memory"\nmax_versions = 3\n')
    s = load(tmp_home, KEYSAFE_APP="from-env", KEYSAFE_NAMING_TEMPLATE="{org}/{name}")
    assert s.app == "from-env"
    assert s.backend == "memory"
    assert s.max_versions == 3
    assert s.naming_template == "{org}/{name}"
    assert s.default_domain == "shared"
    assert s.config_file == cfg
    assert s.sources["app"] == "env KEYSAFE_APP"
    assert s.sources["naming_template"] == "env KEYSAFE_NAMING_TEMPLATE"
    assert s.sources["backend"] == f"file {cfg}"
    assert s.sources["max_versions"] == f"file {cfg}"
    assert "default_domain" not in s.sources
    rows = shown(s)
    assert rows["app"] == ("from-env", "env KEYSAFE_APP")
    assert rows["backend"] == ("memory", f"file {cfg}")
    assert rows["default_domain"] == ("shared", "default")


def test_keysafe_table_form(tmp_home: Path) -> None:
    write_toml(tmp_home, '[keysafe]\napp = "tabled"\ncache_ttl = 2.5\n')
    s = load(tmp_home)
    assert (s.app, s.cache_ttl) == ("tabled", 2.5)


def test_config_in_working_directory_wins_over_home(tmp_home: Path) -> None:
    write_toml(tmp_home, 'app = "home"\n')
    cwd_cfg = write_toml(Path.cwd(), 'app = "cwd"\n')
    s = load(tmp_home)
    assert s.app == "cwd"
    assert s.config_file == cwd_cfg


def test_keysafe_config_names_the_file(tmp_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('app = "named"\n')
    write_toml(tmp_home, 'app = "home"\n')
    assert load(tmp_home, KEYSAFE_CONFIG=str(other)).app == "named"
    with pytest.raises(ConfigError, match="KEYSAFE_CONFIG"):
        load(tmp_home, KEYSAFE_CONFIG=str(tmp_path / "missing.toml"))


def test_empty_variables_are_ignored(tmp_home: Path) -> None:
    s = load(tmp_home, KEYSAFE_APP="", KEYSAFE_BACKEND="")
    assert (s.app, s.backend) == ("keysafe", "sqlite")
    assert "app" not in s.sources


def test_reads_os_environ_by_default(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSAFE_APP", "from-os")
    s = load_settings()
    assert s.app == "from-os"
    assert s.home == tmp_home


def test_overrides_win_and_are_labelled(tmp_home: Path) -> None:
    s = load_settings({"KEYSAFE_HOME": str(tmp_home), "KEYSAFE_APP": "env"}, app="arg")
    assert s.app == "arg"
    assert s.sources["app"] == "argument"
    t = s.with_overrides(backend="memory")
    assert t.backend == "memory"
    assert t.sources["backend"] == "argument"
    assert s.backend == "sqlite"
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({"KEYSAFE_HOME": str(tmp_home)}, colour="blue")


def test_paths_are_expanded(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_home))
    s = load(tmp_home, KEYSAFE_MASTER_KEY_FILE="~/keys/master.key")
    assert s.master_key_file == tmp_home / "keys" / "master.key"
    assert s.key_file == tmp_home / "keys" / "master.key"


@pytest.mark.parametrize(("raw", "value"), [
    ("1", True), ("true", True), ("Yes", True), ("ON", True),
    ("0", False), ("false", False), ("no", False), ("Off", False),
])
def test_booleans(tmp_home: Path, raw: str, value: bool) -> None:
    assert load(tmp_home, KEYSAFE_AUDIT_REQUIRED=raw).audit_required is value


# -- environment and profiles --------------------------------------------------------
def test_keysafe_env_over_environment(tmp_home: Path) -> None:
    s = load(tmp_home, KEYSAFE_ENV="staging", ENVIRONMENT="production")
    assert s.env == "staging"
    assert s.sources["env"] == "env KEYSAFE_ENV"


def test_environment_when_keysafe_env_is_absent(tmp_home: Path) -> None:
    s = load(tmp_home, ENVIRONMENT="production")
    assert s.env == "production"
    assert s.sources["env"] == "env ENVIRONMENT"
    assert load(tmp_home, KEYSAFE_ENV="", ENVIRONMENT="dev").env == "dev"


def test_env_defaults_to_local(tmp_home: Path) -> None:
    s = load(tmp_home)
    assert s.env == "local"
    assert s.profile == "local"


def test_env_is_lowercased(tmp_home: Path) -> None:
    s = load(tmp_home, KEYSAFE_ENV="PROD")
    assert (s.env, s.profile) == ("prod", "production")


@pytest.mark.parametrize(("env", "profile"), [
    ("local", "local"), ("test", "test"),
    ("dev", "development"), ("development", "development"),
    ("stage", "staging"), ("staging", "staging"),
    ("prod", "production"), ("production", "production"), ("Prod", "production"),
    ("qa", "qa"),
])
def test_profile_mapping(env: str, profile: str) -> None:
    assert profile_for(env) == profile
    assert Settings(env=env).profile == profile


PROFILES = """
[profiles.production]
backend = "memory"
region = "eu-west-1"

[profiles.staging]
backend = "memory"
"""


@pytest.mark.parametrize("env", ["prod", "production"])
def test_profile_selects_backend_and_options(tmp_home: Path, env: str) -> None:
    cfg = write_toml(tmp_home, PROFILES)
    s = load(tmp_home, KEYSAFE_ENV=env)
    assert s.backend == "memory"
    assert s.backend_options == {"region": "eu-west-1"}
    assert s.sources["backend"] == f"file {cfg} [profiles.production]"
    assert s.sources["backend_options"] == f"file {cfg} [profiles.production]"
    assert shown(s)["backend_options"] == ("region", f"file {cfg} [profiles.production]")


def test_backend_options_given_as_an_argument_win_over_the_profile(tmp_home: Path) -> None:
    """Django's settings.KEYSAFE passes backend_options as an argument: its options beat
    the file's profile, which fills in the rest."""
    cfg = write_toml(tmp_home, '[profiles.production]\nregion = "eu-west-1"\n'
                                'endpoint = "https://x"\n')
    s = load_settings({"KEYSAFE_HOME": str(tmp_home), "KEYSAFE_ENV": "production"},
                      backend_options={"region": "us-east-2"})
    assert s.backend_options == {"region": "us-east-2", "endpoint": "https://x"}
    assert s.sources["backend_options"] == f"file {cfg} [profiles.production] and argument"


def test_coerce_setting_names_what_is_wrong() -> None:
    from keysafe.config import coerce_setting

    assert coerce_setting("max_value_bytes", "128", "here") == 128
    assert coerce_setting("backend_options", {"a": 1}, "here") == {"a": 1}
    for name, raw, problem in [("nope", 1, "unknown setting 'nope'"),
                               ("sources", {}, "unknown setting"),
                               ("backend_options", "a=1", "must be a mapping"),
                               ("app", b"x", "not bytes"),
                               ("max_value_bytes", "lots", "max_value_bytes from here")]:
        with pytest.raises(ConfigError, match=problem):
            coerce_setting(name, raw, "here")


def test_profile_by_short_name(tmp_home: Path) -> None:
    write_toml(tmp_home, '[profiles.prod]\nbackend = "memory"\n')
    assert load(tmp_home, KEYSAFE_ENV="prod").backend == "memory"


def test_other_environments_keep_the_default_backend(tmp_home: Path) -> None:
    write_toml(tmp_home, PROFILES)
    for env in ("local", "dev"):
        s = load(tmp_home, KEYSAFE_ENV=env)
        assert s.backend == "sqlite"
        assert s.backend_options == {}


def test_keysafe_backend_beats_the_profile(tmp_home: Path) -> None:
    write_toml(tmp_home, PROFILES)
    s = load(tmp_home, KEYSAFE_ENV="prod", KEYSAFE_BACKEND="sqlite")
    assert s.backend == "sqlite"
    assert s.sources["backend"] == "env KEYSAFE_BACKEND"


def test_profile_in_keysafe_table(tmp_home: Path) -> None:
    write_toml(tmp_home, '[keysafe]\napp = "x"\n[keysafe.profiles.production]\n'
                         'backend = "memory"\n')
    assert load(tmp_home, KEYSAFE_ENV="production").backend == "memory"


def test_profile_beats_the_files_default_backend(tmp_home: Path) -> None:
    write_toml(tmp_home, 'backend = "sqlite"\n' + PROFILES)
    assert load(tmp_home, KEYSAFE_ENV="prod").backend == "memory"


def test_top_level_profiles_beside_a_keysafe_table_are_not_ignored(tmp_home: Path) -> None:
    write_toml(tmp_home, '[keysafe]\napp = "x"\n' + PROFILES)
    try:
        s = load(tmp_home, KEYSAFE_ENV="prod")
    except ConfigError:
        return
    assert s.backend == "memory"


# -- bad values ---------------------------------------------------------------------
@pytest.mark.parametrize(("var", "raw", "setting", "why"), [
    ("KEYSAFE_MAX_VERSIONS", "ten", "max_versions", "invalid literal"),
    ("KEYSAFE_MAX_VERSIONS", "-1", "max_versions", "must not be negative"),
    ("KEYSAFE_MAX_VALUE_BYTES", "1.5", "max_value_bytes", "invalid literal"),
    ("KEYSAFE_CACHE_TTL", "soon", "cache_ttl", "could not convert"),
    ("KEYSAFE_CACHE_TTL", "-3", "cache_ttl", "must not be negative"),
    ("KEYSAFE_AUDIT_REQUIRED", "maybe", "audit_required", "expected true or false"),
])
def test_bad_env_values_name_setting_and_source(tmp_home: Path, var: str, raw: str,
                                                setting: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        load(tmp_home, **{var: raw})
    msg = str(exc_info.value)
    assert f"setting {setting} from {var}" in msg
    assert why in msg
    assert exc_info.value.code == "config_error"


def test_bad_file_value_names_setting_and_file(tmp_home: Path) -> None:
    cfg = write_toml(tmp_home, 'max_versions = "many"\n')
    with pytest.raises(ConfigError) as exc_info:
        load(tmp_home)
    assert f"setting max_versions from {cfg}" in str(exc_info.value)


def test_unknown_file_setting(tmp_home: Path) -> None:
    cfg = write_toml(tmp_home, 'colour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colour'") as exc_info:
        load(tmp_home)
    assert str(cfg) in str(exc_info.value)


@pytest.mark.parametrize("key", ["sources", "config_file", "backend_options"])
def test_internal_fields_are_not_file_settings(tmp_home: Path, key: str) -> None:
    write_toml(tmp_home, f'{key} = "x"\n')
    with pytest.raises(ConfigError, match=f"unknown setting '{key}'"):
        load(tmp_home)


def test_unparsable_file(tmp_home: Path) -> None:
    cfg = write_toml(tmp_home, "app = \n")
    with pytest.raises(ConfigError, match="cannot read config file") as exc_info:
        load(tmp_home)
    assert str(cfg) in str(exc_info.value)


def test_profile_must_be_a_table(tmp_home: Path) -> None:
    write_toml(tmp_home, '[profiles]\nproduction = "memory"\n')
    with pytest.raises(ConfigError, match="must be a table"):
        load(tmp_home, KEYSAFE_ENV="prod")


def test_bad_sqlite_synchronous(tmp_home: Path) -> None:
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        load(tmp_home, KEYSAFE_SQLITE_SYNCHRONOUS="OFF")
    assert load(tmp_home, KEYSAFE_SQLITE_SYNCHRONOUS="NORMAL").sqlite_synchronous == "NORMAL"


def test_bad_sqlite_synchronous_names_its_source(tmp_home: Path) -> None:
    with pytest.raises(ConfigError, match="KEYSAFE_SQLITE_SYNCHRONOUS"):
        load(tmp_home, KEYSAFE_SQLITE_SYNCHRONOUS="OFF")


@pytest.mark.parametrize(("toml", "env"), [
    ("max_versions = 1.7\n", {}),
    ("max_versions = true\n", {}),
    ("", {"KEYSAFE_CACHE_TTL": "nan"}),
])
def test_unusable_numbers_are_rejected(tmp_home: Path, toml: str, env: dict[str, str]) -> None:
    write_toml(tmp_home, toml)
    with pytest.raises(ConfigError):
        load(tmp_home, **env)


# -- secrets in settings ------------------------------------------------------------
def test_master_key_is_masked(tmp_home: Path) -> None:
    url = "postgresql://keysafe:db-password-123@db/keysafe"
    s = load(tmp_home, KEYSAFE_MASTER_KEY=KEY, KEYSAFE_DATABASE_URL=url)
    assert s.master_key == KEY
    rows = shown(s)
    assert rows["master_key"] == ("******** (set)", "env KEYSAFE_MASTER_KEY")
    assert rows["database_url"] == ("******** (set)", "env KEYSAFE_DATABASE_URL")
    everything = [repr(s), str(s), repr(s.describe()), repr(s.sources)]
    for text in everything:
        assert KEY not in text
        assert "db-password-123" not in text


def test_webhook_urls_show_only_their_origin(tmp_home: Path) -> None:
    """A Slack-style webhook carries its secret in the path; others in the query or as
    user:password@."""
    hooks = ("https://u:LEAKPW@hooks.example:8443/x?token=LEAKQS, "
             "https://hooks.slack.com/services/T0/B0/LEAKPATH, http://127.0.0.1:9000")
    s = load(tmp_home, KEYSAFE_EVENT_WEBHOOKS=hooks)
    assert s.event_webhooks == hooks  # the value itself is untouched
    assert shown(s)["event_webhooks"][0] == ("https://hooks.example:8443/..., "
                                             "https://hooks.slack.com/..., "
                                             "http://127.0.0.1:9000")
    for text in (repr(s), str(s), repr(s.describe())):
        for leak in ("LEAKPW", "LEAKQS", "LEAKPATH"):
            assert leak not in text


@pytest.mark.parametrize(("url", "origin"), [
    ("https://hooks.example/", "https://hooks.example"),
    ("http://user@h:81", "http://h:81/..."),
    ("not a url", "(unparseable URL)"),
    ("http://[::1", "(unparseable URL)"),
])
def test_url_origin(url: str, origin: str) -> None:
    assert url_origin(url) == origin


def test_unset_master_key_shows_as_unset(tmp_home: Path) -> None:
    assert shown(load(tmp_home))["master_key"] == ("-", "default")


def test_profile_option_values_are_not_in_repr(tmp_home: Path) -> None:
    write_toml(tmp_home, '[profiles.production]\nbackend = "memory"\n'
                         'token = "hvs.profile-token-value"\n')
    s = load(tmp_home, KEYSAFE_ENV="prod")
    assert s.backend_options == {"token": "hvs.profile-token-value"}
    assert "hvs.profile-token-value" not in repr(s)



def test_spec_003s_secrets_backend_is_read_as_keysafe_backend(tmp_path: Path) -> None:
    base = {"KEYSAFE_HOME": str(tmp_path)}
    s = load_settings({**base, "SECRETS_BACKEND": "aws"})
    assert (s.backend, s.sources["backend"]) == ("aws-sm", "env SECRETS_BACKEND")
    assert load_settings({**base, "SECRETS_BACKEND": "gcp",
                          "KEYSAFE_BACKEND": "vault"}).backend == "vault"
    with pytest.raises(ConfigError, match="SECRETS_BACKEND"):
        load_settings({**base, "SECRETS_BACKEND": "s3"})
    # A database URL (which implies PostgreSQL) is not overridden by spec 003's default.
    s = load_settings({**base, "SECRETS_BACKEND": "env",
                       "KEYSAFE_DATABASE_URL": "postgresql://127.0.0.1/x"})
    assert s.backend == "postgres"
    # It beats a keysafe.toml's backend, as KEYSAFE_BACKEND does.
    (tmp_path / "keysafe.toml").write_text('backend = "memory"\n')
    s = load_settings({**base, "SECRETS_BACKEND": "vault",
                       "KEYSAFE_CONFIG": str(tmp_path / "keysafe.toml")})
    assert s.backend == "vault"
