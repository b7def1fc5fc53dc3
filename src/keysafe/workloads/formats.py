"""The ``keysafe export`` formats, each quoted so that its own reader gets back exactly
the stored value: newlines, quotes, ``$``, backslashes, unicode, a leading ``#`` or
space included.

- ``dotenv``: ``NAME='value'`` as python-dotenv reads it (``\\`` and ``'`` escaped in
  single quotes; a value with a carriage return in double quotes with ``\\r``, because
  text-mode reading would turn a bare CR into a newline). Read it with interpolation
  off (``dotenv_values(path, interpolate=False)``; ``keysafe run --env-file`` does), or
  a ``${...}`` inside a value would be expanded.
- ``json``: one object, variable -> value.
- ``shell``: ``export NAME='value'`` for any POSIX shell (``'`` written as ``'\\''``).
- ``github-env``: GitHub's multi-line form ``NAME<<DELIMITER`` / value / ``DELIMITER``
  for ``$GITHUB_ENV``, with a random delimiter checked not to occur in the value.

The two Kubernetes formats are rendered by ``keysafe.kube``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping

from keysafe.errors import InvalidValue, Unsupported

FORMATS = ("dotenv", "json", "shell", "github-env", "k8s-secret", "external-secret")
#: Formats whose readers put each value in an environment variable, which cannot
#: hold a NUL character.
_ENV_FORMATS = ("dotenv", "shell", "github-env")


def check_env_value(var: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidValue(f"the value for {var} contains a NUL character, which an "
                           "environment variable cannot hold")


def dotenv(values: Mapping[str, str]) -> str:
    lines = []
    for var, value in values.items():
        check_env_value(var, value)
        if "\r" in value:
            body = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r")
                    .replace("\n", "\\n"))
            lines.append(f'{var}="{body}"\n')
        else:
            body = value.replace("\\", "\\\\").replace("'", "\\'")
            lines.append(f"{var}='{body}'\n")
    return "".join(lines)


def json_object(values: Mapping[str, str]) -> str:
    return json.dumps(dict(values), ensure_ascii=False, indent=2) + "\n"


def shell_quote(value: str) -> str:
    """POSIX single quotes: everything literal, ``'`` closed, escaped and reopened."""
    return "'" + value.replace("'", "'\\''") + "'"


def shell(values: Mapping[str, str]) -> str:
    out = []
    for var, value in values.items():
        check_env_value(var, value)
        out.append(f"export {var}={shell_quote(value)}\n")
    return "".join(out)


def heredoc_delimiter(value: str, *, attempts: int = 16) -> str:
    """A random delimiter that does not occur anywhere in ``value``."""
    for _ in range(attempts):
        delim = f"KEYSAFE_EOF_{secrets.token_hex(16)}"
        if delim not in value:
            return delim
    raise InvalidValue("could not find a heredoc delimiter absent from a value")


def github_env(values: Mapping[str, str]) -> str:
    """GitHub's ``$GITHUB_ENV`` multi-line syntax for every variable (one-line values
    too: one form, and no value is ever parsed as ``NAME=...``)."""
    out = []
    for var, value in values.items():
        check_env_value(var, value)
        delim = heredoc_delimiter(value)
        out.append(f"{var}<<{delim}\n{value}\n{delim}\n")
    return "".join(out)


def render(fmt: str, values: Mapping[str, str]) -> str:
    """One of the text formats; the Kubernetes ones are rendered by ``keysafe.kube``."""
    renderers = {"dotenv": dotenv, "json": json_object, "shell": shell,
                 "github-env": github_env}
    fn = renderers.get(fmt)
    if fn is None:
        raise InvalidValue(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    return fn(values)


def kube() -> tuple[Callable[..., str], Callable[..., str]]:
    """(render_secret, render_external_secret) from ``keysafe.kube``.

    Imported by name at call time: the module belongs to the Kubernetes integration
    and an install without it still exports the other formats.
    """
    import importlib

    try:
        mod = importlib.import_module("keysafe.kube")
        return mod.render_secret, mod.render_external_secret
    except (ImportError, AttributeError) as exc:
        raise Unsupported("the Kubernetes formats need keysafe.kube, which this install "
                          f"does not have ({type(exc).__name__})") from None
