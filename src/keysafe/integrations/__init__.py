"""Integrations with application frameworks: ``settings`` (a pydantic-settings source)
and ``fastapi`` (a dependency yielding a manager scoped to the request's org). Each is
imported on its own and needs its framework installed."""
