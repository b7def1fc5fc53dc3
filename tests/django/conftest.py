"""Django, configured once for this directory: a file database (so its bytes can be
searched for a value), the auth apps, keysafe's app and ``ksapp``; each test gets its
own keysafe home through ``settings.KEYSAFE``."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

_DB_DIR = Path(tempfile.mkdtemp(prefix="keysafe-django-"))
atexit.register(shutil.rmtree, _DB_DIR, True)


def _configure() -> None:
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-insecure-tests-only-" + "x" * 30,
        ALLOWED_HOSTS=["testserver"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(_DB_DIR / "app.sqlite3")}},
        INSTALLED_APPS=["django.contrib.admin", "django.contrib.contenttypes",
                        "django.contrib.auth", "django.contrib.sessions",
                        "django.contrib.messages", "keysafe.integrations.django", "ksapp"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware",
                    "django.contrib.messages.middleware.MessageMiddleware",
                    "keysafe.integrations.django.middleware.KeysafeActorMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True,
                    "OPTIONS": {"context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages"]}}],
        ROOT_URLCONF="ksapp.urls",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        KEYSAFE={},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


_configure()


@pytest.fixture
def db_file() -> Path:
    return _DB_DIR / "app.sqlite3"


@pytest.fixture
def keysafe_conf(tmp_home: Path) -> dict[str, Any]:
    """spec 000's layout: /ragstar/{env}/org-{id}/{service}/{name}, on an embedded
    store in this test's own home, with no read cache (so every read is recorded)."""
    return {"home": str(tmp_home), "backend": "sqlite", "app": "ragstar",
            "naming_template": "/{app}/{env}/org-{org}/{domain}/{name}", "cache_ttl": 0,
            "actor": "ragstar-web"}


@pytest.fixture
def keysafe_django(keysafe_conf: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """settings.KEYSAFE for this test (the manager is rebuilt for it and closed after),
    and empty tables."""
    from django.contrib.auth.models import User
    from django.test import override_settings
    from ksapp.models import (
        Organisation,
        OrganisationIntegration,
        OrganisationSettings,
        Team,
        Unnamed,
        Webhook,
    )

    for model in (OrganisationIntegration, OrganisationSettings, Team, Webhook, Unnamed,
                  Organisation):
        model.objects.all()._raw_delete(using="default")   # no signals: no clean-up
    User.objects.all().delete()                            # with their admin log entries
    with override_settings(KEYSAFE=keysafe_conf):
        yield keysafe_conf
