"""``keysafe.Secret``: a value that does not show itself.

``get`` returns a plain ``str``, which is what most code passes on (an SDK's
``api_key=``). A ``str`` shows itself wherever it goes: a ``repr`` in a log line, an
f-string, a traceback's locals, a debugger. ``get_secret`` returns the value wrapped,
as Starlette's ``Secret`` and pydantic's ``SecretStr`` do, so that holding it is safe
and using it is explicit: ``reveal()``.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

__all__ = ["Secret"]

MASK = "**********"


class Secret:
    """A secret value whose repr, str and format are masked; ``reveal()`` gives it.

    ``==`` compares in constant time, with another Secret or a ``str``. It is not
    hashable (a set or dict key would keep a digest of it around), and it refuses to be
    pickled (a pickle holds the value in the clear).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret holds a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: pass it where it is used, never to a log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other._value
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled (the pickle would hold the value in the "
                        "clear); pass secret.reveal() where the value has to go")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
