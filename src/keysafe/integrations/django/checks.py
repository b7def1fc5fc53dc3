"""``manage.py check``: keysafe's settings are checked at start-up, not at the first
secret a request touches."""

from __future__ import annotations

from typing import Any

from django.core import checks


def check_settings(app_configs: Any = None, **_: Any) -> list[Any]:
    """keysafe.E001: ``settings.KEYSAFE`` (over the KEYSAFE_* variables) is unusable;
    keysafe.E002: ``KEYSAFE_ACTOR_FUNCTION`` does not import; keysafe.W001: the actor
    middleware comes before AuthenticationMiddleware (every request would be audited
    as anonymous). Nothing is opened."""
    from django.conf import settings as django_settings

    from keysafe.errors import ConfigError
    from keysafe.integrations.django import keysafe_settings

    found = []
    try:
        keysafe_settings()
    except ConfigError as exc:
        found.append(checks.Error(exc.message, hint="see docs/django.md, 'Settings'",
                                  id="keysafe.E001"))
    dotted = getattr(django_settings, "KEYSAFE_ACTOR_FUNCTION", None)
    if dotted:
        from django.utils.module_loading import import_string

        try:
            fn = import_string(dotted)
        except Exception as exc:  # an import error, or what the module raised
            found.append(checks.Error(f"KEYSAFE_ACTOR_FUNCTION {dotted!r} does not import: "
                                      f"{type(exc).__name__}: {exc}", id="keysafe.E002"))
        else:
            if not callable(fn):
                found.append(checks.Error(f"KEYSAFE_ACTOR_FUNCTION {dotted!r} is not "
                                          "callable", id="keysafe.E002"))
    if not dotted and not _authenticated_first(list(getattr(django_settings, "MIDDLEWARE",
                                                               None) or [])):
        found.append(checks.Warning(
            "KeysafeActorMiddleware has no AuthenticationMiddleware before it, so it sees "
            "no user and audits every request as django:anonymous",
            hint="put it after AuthenticationMiddleware in MIDDLEWARE, or name who a "
                 "request acts as with KEYSAFE_ACTOR_FUNCTION", id="keysafe.W001"))
    return found


def _authenticated_first(middleware: list[str]) -> bool:
    """False when KeysafeActorMiddleware (or a subclass) is listed with no
    AuthenticationMiddleware (or a subclass) before it."""
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.utils.module_loading import import_string

    from keysafe.integrations.django.middleware import KeysafeActorMiddleware

    auth_seen = False
    for dotted in middleware:
        try:
            cls = import_string(dotted)
        except Exception:  # noqa: S112  # Django itself names a middleware that does not import
            continue
        if not isinstance(cls, type):
            continue
        if issubclass(cls, AuthenticationMiddleware):
            auth_seen = True
        elif issubclass(cls, KeysafeActorMiddleware):
            return auth_seen
    return True
