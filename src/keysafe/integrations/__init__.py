"""Integrations with application frameworks: ``settings`` (a pydantic-settings source),
``fastapi`` (a dependency yielding a manager scoped to the request's org) and
``django`` (an app: model mixins, a blind-write form, the request's user in the audit
log, ``manage.py test_secrets``). Each is imported on its own and needs its framework
installed."""
