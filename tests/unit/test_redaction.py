"""Credentials in a configured URL never reach a message or a repr: a server URL with
user info or a query, Vault's address, a PostgreSQL URL whose password libpq quotes back
in its own error (a reviewer found each of these echoed)."""

from __future__ import annotations

import pytest

from keysafe.errors import BackendUnavailable, ConfigError
from keysafe.hosts import shown_url

SECRET = "S3cretPw"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://admin:S3cretPw@keysafe.internal/base/", "https://keysafe.internal/base"),
    ("http://h:8787/?token=S3cretPw#S3cretPw", "http://h:8787"),
    ("admin:S3cretPw@keysafe.internal", "keysafe.internal"),
    ("http://u:S3cretPw@[::1", "http://[::1"),
    ("keysafe.internal?S3cretPw", "keysafe.internal"),
    # A password holding '/', '?' or '#' must not end the host part early.
    ("https://admin:pa/S3cretPw@keysafe.internal", "https://keysafe.internal"),
    ("https://admin:S3cretPw#x@keysafe.internal/p", "https://keysafe.internal/p"),
    ("https://admin:a?S3cretPw@keysafe.internal", "https://keysafe.internal"),
])
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert SECRET not in shown_url(url)


def test_vault_address_with_user_info_is_not_shown() -> None:
    from keysafe.backends.vault import VaultBackend

    b = VaultBackend(url=f"http://admin:{SECRET}@127.0.0.1:1", token="x", retries=0,
                     timeout=1)
    assert SECRET not in repr(b)
    assert b.url == "http://127.0.0.1:1"
    with pytest.raises(BackendUnavailable) as e:
        b.list("keysafe/")
    assert "127.0.0.1:1" in str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("url", [
    "postgresql://keysafe:pa%ss@127.0.0.1:1/keysafe",  # libpq quotes the bad token back
    "postgresql://keysafe:pa%zzword@127.0.0.1:1/keysafe",
])
def test_postgres_password_libpq_quotes_back_is_hidden(url: str) -> None:
    from keysafe.backends.postgres import PostgresBackend
    from keysafe.crypto.keys import KeyRing

    with pytest.raises(BackendUnavailable) as e:
        PostgresBackend(url, KeyRing.generate(), connect_timeout=1)
    password = url.split(":")[2].split("@")[0]
    assert password not in str(e.value)
    assert "***" in str(e.value)


def test_postgres_url_with_a_bare_at_sign_is_refused_unshown() -> None:
    from keysafe.backends.postgres import PostgresBackend
    from keysafe.crypto.keys import KeyRing

    with pytest.raises(ConfigError, match="not percent-encoded") as e:
        PostgresBackend(f"postgresql://keysafe:p@{SECRET}@127.0.0.1:1/k", KeyRing.generate())
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("url", [f"postgresql://app:se/{SECRET}@127.0.0.1:1/db",
                                 f"postgresql://app:se#{SECRET}@127.0.0.1:1/db",
                                 f"postgresql://app:p@{SECRET}@127.0.0.1:1/db"])
def test_postgres_user_info_must_be_percent_encoded(url: str) -> None:
    from keysafe.backends.postgres import check_userinfo, redact_url

    with pytest.raises(ConfigError, match="not percent-encoded") as e:
        check_userinfo(url)
    assert SECRET not in str(e.value)
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize("url", [
    "postgresql://db.example.com/keysafe?user=keysafe@myserver&sslmode=require",
    "postgresql://u:pw@db/x?application_name=a@b",
])
def test_an_at_sign_in_the_query_is_not_user_info(url: str) -> None:
    """Azure's ``?user=app@server`` and the like open as before (a reviewer found them
    refused as badly encoded user info)."""
    from keysafe.backends.postgres import check_userinfo, redact_url

    check_userinfo(url)
    assert "pw" not in redact_url(url)
    assert "myserver" in redact_url(url) or "a@b" in redact_url(url)


def test_uvicorn_does_not_believe_forwarded_headers(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: object) -> None:
    """The peer is the client, as with granian: otherwise any local process could pose
    as another address with X-Forwarded-For (token networks, the limiter, audit)."""
    import uvicorn

    from keysafe.config import load_settings
    from keysafe.server import run

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path))
    run.serve(load_settings(), host="127.0.0.1", port=0, server="uvicorn", as_json=True)
    assert seen.get("proxy_headers") is False


@pytest.mark.parametrize(("url", "refused", "shown"), [
    ("postgresql://db.example.com/k?user=app@myserver&sslmode=require", False,
     "postgresql://db.example.com/k?user=app@myserver&sslmode=require"),
    ("postgresql://u:pw@db/x?application_name=a@b", False,
     "postgresql://u:***@db/x?application_name=a@b"),
    ("postgresql://ks@db/k?password=sec@ret", False, "postgresql://ks@db/k?password=***"),
    ("postgresql://app:se/cret@host/db", True, "postgresql://app:***@host/db"),
    ("postgresql://app:se#cret@h/db", True, "postgresql://app:***@h/db"),
    ("postgresql://user:pa?ss@127.0.0.1:1/db?sslmode=disable", True,
     "postgresql://user:***@127.0.0.1:1/db?sslmode=disable"),
    ("postgresql://user:p@ss?word@host/db", True, "postgresql://user:***@host/db"),
])
def test_postgres_user_info_read_as_libpq_would_be_told(url: str, refused: bool,
                                                        shown: str) -> None:
    """Which '@' ends the user info (a reviewer found each of these shown or refused
    wrongly by a rule that looked at the last '@' alone)."""
    from keysafe.backends.postgres import check_userinfo, redact_url

    assert redact_url(url) == shown
    if refused:
        with pytest.raises(ConfigError):
            check_userinfo(url)
    else:
        check_userinfo(url)
