"""Choosing how a secret rotates: its rotator, the rotator's options and its period
(``keysafe rotate configure``, on a store or through a server's ``PUT …/rotation``).
Everything is checked before anything is stored: a rotator that does not load, or
options it does not take, are refused now, not at the next scheduled run."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from keysafe.errors import InvalidValue

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata

__all__ = ["MAX_PERIOD_DAYS", "OPTION_NAME", "configure_rotation"]

#: The longest period a secret may be given (ten years).
MAX_PERIOD_DAYS = 3650
#: A rotator option's name (a tag ``rotator.<name>``): what the rotators take, and
#: entry points' names with '.' or '-'.
OPTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def configure_rotation(mgr: SecretManager, name: str, org: str | None, *,
                       domain: str | None = None, rotator: str | None = None,
                       options: Mapping[str, str] | None = None,
                       unset_options: Iterable[str] = (),
                       period_days: int | None = None,
                       dry_run: bool = False) -> SecretMetadata:
    """Set ``name``'s rotator (tag ``rotator``), its ``options`` (tags ``rotator.*``,
    added to those set before), remove the options named in ``unset_options`` (those
    an earlier rotator took: switching from a webhook to ``random`` drops its ``url``),
    and set its period in days (0: never scheduled), with no new version; the metadata
    as it is after (``dry_run``: as it would be, storing nothing). InvalidValue for
    nothing to set, a period out of range, or an option both set and removed;
    ConfigError when the rotator does not load or does not take the options (these
    and any set before, less those removed; without a rotator of its own, the one its
    type gets by default); NotFound when the secret is not stored."""
    from keysafe.rotation.rotators import load_rotator, options_of

    opts = dict(options or {})
    drop = sorted({unset_options} if isinstance(unset_options, str) else set(unset_options))
    if rotator is None and not opts and not drop and period_days is None:
        raise InvalidValue("configure needs a rotator, options or a period")
    for key in (*opts, *drop):
        if not OPTION_NAME.fullmatch(key):
            raise InvalidValue(f"option name {key[:40]!r}: letters, digits, '_', '.' and "
                               "'-', up to 64")
    both = sorted(set(opts) & set(drop))
    if both:
        raise InvalidValue(f"option {both[0]!r} is both set and removed")
    if period_days is not None and not 0 <= period_days <= MAX_PERIOD_DAYS:
        raise InvalidValue(f"the period must be 0 to {MAX_PERIOD_DAYS} days "
                           "(0: never scheduled)")
    meta = mgr.describe(name, org, domain=domain)
    unset = [k for k in drop if f"rotator.{k}" not in meta.tags]
    if unset:
        # A security setting: a misspelt name must be seen, not quietly kept.
        have = sorted(k[8:] for k in meta.tags if k.startswith("rotator."))
        raise InvalidValue(f"option {unset[0]!r} is not set on {name} (set: "
                           f"{', '.join(have) or 'none'})")
    given = {f"rotator.{k}": v for k, v in opts.items()}
    if rotator is not None:
        given["rotator"] = rotator
    gone = [f"rotator.{k}" for k in drop]
    tags = {k: v for k, v in {**meta.tags, **given}.items() if k not in gone}
    chosen = tags.get("rotator")
    if chosen is None and (opts or drop):
        from keysafe.rotation.policy import Policy

        ref = mgr.parse(meta.path)
        chosen = Policy(mgr.catalog).state(meta, ref.org, ref.domain, ref.name).rotator
    if chosen is not None:
        check = getattr(load_rotator(chosen), "check_options", None)
        if check is not None:
            check(name, options_of(tags))
    fields: dict[str, Any] = {}
    if period_days is not None:
        fields["rotation_days"] = period_days
    if dry_run:
        return meta._replace(tags=tags, **fields)
    # Only what is set here is written over the tags as they are then.
    return mgr.update_tags(name, org, domain=domain, set_tags=given, unset=gone, **fields)
