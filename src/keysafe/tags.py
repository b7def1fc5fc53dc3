"""The rule for the tags a user may set on a secret, shared by the HTTP API (its request
bodies) and the CLI (``put --tag``, ``tag --set``), so neither accepts what the other
refuses.

Rotation settings are not user tags: ``keysafe rotate configure`` and library code set
them through the manager directly, not through this check.
"""

from __future__ import annotations

from collections.abc import Mapping

from keysafe.errors import InvalidValue

#: As AWS Secrets Manager bounds them; the panel checks the same before sending.
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 50, 128, 256

#: How much of a bad tag name a message quotes (a name may be very long).
_NAME_PREFIX = 40


def check_user_tags(tags: Mapping[str, str | None] | None) -> None:
    """Refuse (InvalidValue, naming the bad tag) tags a user may not set: more than
    MAX_TAGS in one request, a name that is not 1 to MAX_TAG_KEY printable characters,
    a value over MAX_TAG_VALUE characters or not printable, a rotation setting
    (``rotator``, ``rotator.*``, ``rotation.*``, ``maintenance_window``), or an
    ``env_var`` that is not a variable name. A value of None (a tag to remove) is
    checked by name only. No message quotes a value, or more than a short prefix of a
    name."""
    # Imported here: this module stays cheap and free of cycles for whoever imports it.
    from keysafe.rotation.policy import is_rotation_tag
    from keysafe.workloads.names import ENV_VAR_TAG, tagged_env_var

    if tags and len(tags) > MAX_TAGS:
        raise InvalidValue(f"{len(tags)} tags in one request; the limit is {MAX_TAGS}")
    for key, value in (tags or {}).items():
        if not key or len(key) > MAX_TAG_KEY or not key.isprintable():
            raise InvalidValue(f"tag name {key[:_NAME_PREFIX]!r}: 1 to {MAX_TAG_KEY} "
                               "printable characters")
        if value is not None and (len(value) > MAX_TAG_VALUE or not value.isprintable()):
            raise InvalidValue(f"tag {key!r}: the value must be at most {MAX_TAG_VALUE} "
                               "printable characters")
        if is_rotation_tag(key):
            raise InvalidValue(f"tag {key!r} is reserved for rotation settings: set them "
                               "with `keysafe rotate configure`")
        if key == ENV_VAR_TAG and value is not None \
                and tagged_env_var({key: value}) is None:
            raise InvalidValue(f"tag {ENV_VAR_TAG!r} must be an environment variable "
                               "name (letters, digits and '_', not starting with a digit)")
