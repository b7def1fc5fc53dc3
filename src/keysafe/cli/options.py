"""Options every secret command shares, and parsers for the fiddly ones."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from keysafe.cli.reading import MAX_INT as MAX_INT


def segment(kind: str) -> Callable[[str | None], str | None]:
    """A typer callback: the option's value if it is a valid ``kind`` segment (an
    empty ``--domain ''`` must not quietly mean the default), else BadParameter (exit 2)
    naming why."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        from keysafe.errors import InvalidName
        from keysafe.naming import validate_segment

        try:
            validate_segment(kind, value)
        except InvalidName as exc:
            raise typer.BadParameter(exc.message) from None
        return value

    return check


Name = Annotated[str, typer.Argument(
    metavar="NAME",
    help="Secret name (with --org), or its full path, e.g. keysafe/local/acme/shared/x.",
    show_default=False)]
Org = Annotated[str | None, typer.Option(
    "--org", help="Organisation (tenant). Omit when NAME is a full path.",
    show_default=False, callback=segment("org"))]
Domain = Annotated[str | None, typer.Option(
    "--domain",
    help="Domain within the org (default: the configured default domain, shared).",
    show_default=False, callback=segment("domain"))]
Env = Annotated[str | None, typer.Option(
    "--env", help="Environment, like KEYSAFE_ENV: the path segment and the backend "
                  "profile (default: KEYSAFE_ENV, else ENVIRONMENT, else local).",
    show_default=False, callback=segment("env"))]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def parse_tags(items: list[str] | None, option: str = "--tag", *,
                user_tags: bool = False) -> dict[str, str] | None:
    """``--tag k=v`` (repeatable) as a dict; BadParameter (exit 2) names the malformed
    item and the ``option`` it came from. With ``user_tags`` (a secret's own tags, not
    ``rotate configure --option`` or ``sync --label``), they must also be ones a user may
    set, as the HTTP API requires (``check_tags``)."""
    if not items:
        return None
    tags: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=f"'{option}'")
        tags[key.strip()] = value
    if user_tags:
        check_tags(tags, option)
    return tags


def check_tags(tags: Mapping[str, str | None], option: str) -> None:
    """BadParameter (exit 2) naming a tag the HTTP API would refuse
    (keysafe.tags.check_user_tags): None values are tags to remove."""
    from keysafe.errors import InvalidValue
    from keysafe.tags import check_user_tags

    try:
        check_user_tags(tags)
    except InvalidValue as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{option}'") from None


Expires = Annotated[str | None, typer.Option(
    "--expires", metavar="TIME",
    help="When the secret expires: an ISO 8601 time (UTC if no offset) or a span from "
         "now like 90d, 12h, 2w. `keysafe status` shows it; an expiring secret is "
         "announced (secret.expiring).", show_default=False)]


def parse_versions(text: str) -> list[int]:
    """``1,2,5`` as [1, 2, 5]; BadParameter for anything else."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or not 1 <= int(part) <= MAX_INT:
            raise typer.BadParameter(f"{part!r} is not a version number (1 to {MAX_INT})",
                                     param_hint="'--versions'")
        out.append(int(part))
    if not out:
        raise typer.BadParameter("give at least one version", param_hint="'--versions'")
    return sorted(set(out))


_RELATIVE = re.compile(r"(\d+)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNIT = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes",
         "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str | None, *, option: str,
               now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (naive means UTC) or an age like ``90s``, ``15m``, ``1h``,
    ``7d``, ``2w`` (that long before now)."""
    return _when(text, option, -1, now)


def parse_expiry(text: str | None, *, option: str = "--expires") -> datetime | None:
    """A secret's expiry: an ISO 8601 time (naive means UTC) or a span like ``90d``,
    ``12h`` or ``2w`` from now; BadParameter unless it is in the future."""
    from keysafe.durations import future_expiry
    from keysafe.errors import InvalidValue

    when = _when(text, option, 1)
    if when is None:
        return None
    try:
        return future_expiry(when, given=repr(text))
    except InvalidValue as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{option}'") from None


def _when(text: str | None, option: str, sign: int,
          now: datetime | None = None) -> datetime | None:
    """An ISO time, or a span like ``7d`` before (``sign`` -1) or after (1) now."""
    if text is None:
        return None
    s = text.strip()
    m = _RELATIVE.fullmatch(s)
    if m:
        try:
            return (now or datetime.now(UTC)) + sign * timedelta(
                **{_UNIT[m.group(2).lower()]: int(m.group(1))})
        except OverflowError:
            raise typer.BadParameter(
                f"{text!r} is further {'back' if sign < 0 else 'ahead'} than a date can be",
                param_hint=f"'{option}'") from None
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO time (2024-05-01T12:00:00Z) nor a span like 1h "
            "or 7d", param_hint=f"'{option}'") from None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d
