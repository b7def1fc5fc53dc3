"""Django integration: spec 000's secrets service as a Django app.

```python
# settings.py
INSTALLED_APPS = [..., "keysafe.integrations.django"]
MIDDLEWARE = [..., "keysafe.integrations.django.middleware.KeysafeActorMiddleware"]
KEYSAFE = {"app": "ragstar", "naming_template": "/{app}/{env}/org-{org}/{domain}/{name}"}

# models.py
from keysafe.integrations.django.mixins import KeysafeCredentialsMixin, KeysafeSecretsMixin

class OrganisationSettings(KeysafeSecretsMixin, models.Model):
    organisation = models.OneToOneField(Organisation, on_delete=models.CASCADE)
    keysafe_org = "{organisation_id}"
    keysafe_domain = "llm"

org_settings.set_llm_api_key("openai", "sk-...")
key = org_settings.get_llm_api_key("openai")
```

One SecretManager per process, built on first use from ``settings.KEYSAFE`` (keysafe's
setting names, over the KEYSAFE_* variables and keysafe.toml). With the middleware
(after AuthenticationMiddleware), every read and write made while a request is
handled is audited as the request's user
(``django:user:<username>``); ``acting_as("celery:nightly")`` does the same for other code.
Needs ``pip install 'keysafe[django]'``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from keysafe.errors import ConfigError

try:
    import django
except ImportError:  # pragma: no cover - depends on the install
    raise ConfigError("keysafe.integrations.django needs Django, which is not installed; "
                      "install it with: pip install 'keysafe[django]'") from None
if django.VERSION < (4, 2):  # pragma: no cover - depends on the install
    raise ConfigError(f"keysafe.integrations.django needs Django 4.2 or later, not "
                      f"{django.get_version()}: pip install 'keysafe[django]'")

if TYPE_CHECKING:
    from keysafe.config import Settings
    from keysafe.manager.manager import SecretManager

__all__ = ["acting_as", "keysafe_settings", "reset_manager", "secret_manager"]

_lock = threading.Lock()
_manager: SecretManager | None = None
#: Who the current code acts for: (actor, request id) from acting_as, or the request
#: KeysafeActorMiddleware is handling, whose user is looked up when a secret is first
#: touched (after any authentication the view does itself).
_acting: ContextVar[tuple[str, str | None] | Any] = ContextVar("keysafe_django_acting",
                                                               default=None)
log = logging.getLogger("keysafe.django")


def keysafe_settings() -> Settings:
    """keysafe's Settings with ``settings.KEYSAFE`` applied over the KEYSAFE_* variables
    and keysafe.toml. ConfigError names a setting that is unknown or unusable."""
    from collections.abc import Mapping

    from django.conf import settings as django_settings

    from keysafe.config import coerce_setting, load_settings

    given = getattr(django_settings, "KEYSAFE", None) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"settings.KEYSAFE must be a dict of keysafe settings, not "
                          f"{type(given).__name__}")
    for k in given:
        if not isinstance(k, str):
            raise ConfigError(f"settings.KEYSAFE: setting names are text, not {k!r}")
    # None is "not given" (os.environ.get of an unset variable), not the text "None".
    return load_settings(**{k: coerce_setting(k, v, f"settings.KEYSAFE[{k!r}]")
                            for k, v in given.items() if v is not None})


def base_manager() -> SecretManager:
    """The process's SecretManager, built on first use, acting as itself."""
    global _manager
    mgr = _manager
    if mgr is None:
        with _lock:
            mgr = _manager
            if mgr is None:
                from keysafe.manager.manager import SecretManager

                mgr = _manager = SecretManager.from_settings(keysafe_settings())
    return mgr


def secret_manager() -> SecretManager:
    """The process's SecretManager, acting for whoever the current code acts for: the
    request's user under KeysafeActorMiddleware, the name given to ``acting_as``, else
    the manager's own actor (KEYSAFE_ACTOR)."""
    mgr = base_manager()
    acting = _acting.get()
    if acting is None:
        return mgr
    actor, request_id = acting if isinstance(acting, tuple) else request_acting(acting)
    return mgr.as_actor(actor, client="django", request_id=request_id)


def request_acting(request: Any) -> tuple[str, str | None]:
    """(actor, request id) of a request, worked out once per request (it may read the
    session: sync code only; KeysafeActorMiddleware works it out before an async view).
    The request id is its X-Request-ID when that looks like one (as the HTTP server
    takes it)."""
    known: tuple[str, str | None] | None = getattr(request, "_keysafe_acting", None)
    if known is None:
        from keysafe.naming import REQUEST_ID

        rid = request.headers.get("X-Request-ID")
        known = (request_actor(request), rid if rid and REQUEST_ID.fullmatch(rid) else None)
        request._keysafe_acting = known
    return known


def request_actor(request: Any) -> str:
    """Who a request acts as: ``settings.KEYSAFE_ACTOR_FUNCTION`` (a dotted path to a
    function of the request) when set, else ``django:user:<username>`` for a signed-in
    user and ``django:anonymous`` otherwise."""
    from django.conf import settings as django_settings

    dotted = getattr(django_settings, "KEYSAFE_ACTOR_FUNCTION", None)
    if dotted:
        from django.utils.module_loading import import_string

        try:
            fn: Callable[[Any], object] = import_string(dotted)
            actor = fn(request)
        except Exception as exc:  # a broken function must not take requests down
            log.warning("keysafe: KEYSAFE_ACTOR_FUNCTION %s failed (%s): auditing as "
                        "django:unknown", dotted, type(exc).__name__)
            return "django:unknown"
        if not isinstance(actor, str) or not actor.strip():
            log.warning("keysafe: KEYSAFE_ACTOR_FUNCTION %s gave no name: auditing as "
                        "django:unknown", dotted)
            return "django:unknown"
        return actor
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "django:anonymous"
    return f"django:user:{user.get_username()}"


@contextmanager
def acting_as(actor: str, *, request_id: str | None = None) -> Iterator[None]:
    """Audit every read and write inside the block as ``actor`` (a Celery task, a
    management command, a data migration)."""
    token = _acting.set((actor, request_id))
    try:
        yield
    finally:
        _acting.reset(token)


def reset_manager() -> None:
    """Close the process's manager; the next use builds it again from the settings (a
    ``KEYSAFE`` change under ``override_settings`` does this by itself). Code still
    holding the old manager finds it closed."""
    global _manager
    with _lock:
        old, _manager = _manager, None
    if old is not None:
        old.close()


def _forget_after_fork() -> None:
    """A forked worker (gunicorn --preload) builds its own manager: it must not share
    its parent's database connections (better still, touch no secret before the fork),
    nor a lock another of its parent's threads held."""
    global _manager, _lock
    _manager = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
