"""``keysafe.Secret`` (DESIGN: "a ``Secret`` whose repr is masked") and the
``get_secret`` verbs that return it: the value shows nowhere it is not asked for."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import traceback

import pytest

from keysafe import AsyncSecretManager, Secret, SecretManager
from keysafe.backends.memory import MemoryBackend

CANARY = "canary-5e3c-" + "q" * 20


def test_masked_everywhere_it_is_not_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret(CANARY)
    caplog.set_level(logging.INFO)
    logging.getLogger("app").info("key %s %r", s, s)
    logging.getLogger("app").info(f"key {s} {s!r} {s:>20} {[s]} {({'k': s})}")
    old_styles = ["%s" % s, "{}".format(s)]  # noqa: UP031, UP032 - the point here
    shown = [repr(s), str(s), f"{s}", *old_styles, str([s]), str({"k": s}), caplog.text]
    for text in shown:
        assert CANARY not in text
    assert repr(s) == "Secret('**********')"
    assert s.reveal() == CANARY


def test_a_traceback_with_locals_does_not_show_it() -> None:
    def use(secret: Secret) -> None:
        raise RuntimeError("the provider refused the key")

    try:
        use(Secret(CANARY))
    except RuntimeError as exc:
        te = traceback.TracebackException.from_exception(exc, capture_locals=True)
        assert CANARY not in "".join(te.format())


def test_compares_in_constant_time_is_not_hashable_and_is_not_pickled() -> None:
    s = Secret(CANARY)
    assert s == CANARY
    assert s == Secret(CANARY)
    assert s != "other"
    assert s != 42
    assert bool(Secret("")) is False
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(s)
    assert copy.deepcopy(s) is s
    with pytest.raises(TypeError, match="holds a str"):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_get_secret_in_the_library_sync_and_async() -> None:
    mgr = SecretManager(MemoryBackend(), env="local")
    mgr.put("openai_api_key", "sk-" + "a1" * 16, "acme")
    got = mgr.get_secret("openai_api_key", "acme")
    assert isinstance(got, Secret)
    assert got.reveal() == mgr.get("openai_api_key", "acme")
    mgr.put("openai_api_key", "sk-" + "b2" * 16, "acme")
    assert mgr.get_secret("openai_api_key", "acme", version=1) == "sk-" + "a1" * 16

    async def read() -> Secret:
        return await AsyncSecretManager(mgr).get_secret("openai_api_key", "acme")

    assert asyncio.run(read()).reveal() == "sk-" + "b2" * 16
