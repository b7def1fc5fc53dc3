"""``KeysafeActorMiddleware``: the secrets a request reads and writes are audited as
its user, including those read while a streaming response is sent.

The user is looked up once per request, before the view (under ASGI in a worker
thread), so the middleware goes after AuthenticationMiddleware. Looking it up lazily,
when a secret is first touched, would touch the session synchronously from an async
view."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

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
        acting = request_acting(request)
        token = _acting.set(acting)
        try:
            response = self.get_response(request)
        finally:
            _acting.reset(token)
        return _follow(response, acting)

    async def _acall(self, request: Any) -> Any:
        acting = await sync_to_async(request_acting)(request)
        token = _acting.set(acting)
        try:
            response = await self.get_response(request)
        finally:
            _acting.reset(token)
        return _follow(response, acting)


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
    while True:
        token = _acting.set(acting)
        try:
            chunk = next(it)
        except StopIteration:
            return
        finally:
            _acting.reset(token)
        yield chunk


async def _async_stream(content: Any, acting: Any) -> AsyncIterator[Any]:
    it = aiter(content)
    while True:
        token = _acting.set(acting)
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            return
        finally:
            _acting.reset(token)
        yield chunk
