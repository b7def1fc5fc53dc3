"""``KeysafeActorMiddleware``: the secrets a request reads and writes are audited as
its user, including those read while a streaming response is sent.

The user is looked up when a secret is first touched, so requests that touch none pay
nothing (and get no ``Vary: Cookie`` from it), and authentication done in the view
itself (Django REST framework's) is seen. An async view gets it worked out before it
runs, in a worker thread: an async view may not read the session synchronously."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from keysafe.integrations.django import _acting, request_acting


class KeysafeActorMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        token = _acting.set(request)
        try:
            response = self.get_response(request)
        finally:
            _acting.reset(token)
        return _follow(response, request)

    async def _acall(self, request: Any) -> Any:
        token = _acting.set(request)
        try:
            response = await self.get_response(request)
        finally:
            _acting.reset(token)
        return _follow(response, request)

    def process_view(self, request: Any, view: Callable[..., Any], *args: Any) -> None:
        """Before an async view: its user, looked up here (sync code, under ASGI in a
        worker thread Django provides)."""
        if iscoroutinefunction(view):
            request_acting(request)


def _follow(response: Any, acting: Any) -> Any:
    """``response``, whose streamed content (if any) is produced acting as ``acting``."""
    from django.http import FileResponse

    if not getattr(response, "streaming", False) or isinstance(response, FileResponse):
        return response  # a file is sent as it is (sendfile), and reads no secret
    content = response.streaming_content
    if getattr(response, "is_async", False):
        response.streaming_content = _async_stream(content, acting)
    else:
        response.streaming_content = _sync_stream(content, acting)
    return response


def _sync_stream(content: Any, acting: Any) -> Iterator[Any]:
    it = iter(content)
    try:
        while True:
            token = _acting.set(acting)
            try:
                chunk = next(it)
            except StopIteration:
                return
            finally:
                _acting.reset(token)
            yield chunk
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


async def _async_stream(content: Any, acting: Any) -> AsyncIterator[Any]:
    it = aiter(content)
    try:
        while True:
            token = _acting.set(acting)
            try:
                chunk = await anext(it)
            except StopAsyncIteration:
                return
            finally:
                _acting.reset(token)
            yield chunk
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
