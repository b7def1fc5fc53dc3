from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from ksapp.models import OrganisationSettings


def has_key(request: HttpRequest, pk: int) -> JsonResponse:
    row = OrganisationSettings.objects.get(pk=pk)
    return JsonResponse({"set": row.get_llm_api_key("openai") is not None})


async def has_key_async(request: HttpRequest, pk: int) -> JsonResponse:
    from asgiref.sync import sync_to_async

    def read() -> bool:
        row = OrganisationSettings.objects.get(pk=pk)
        return row.get_llm_api_key("openai") is not None

    return JsonResponse({"set": await sync_to_async(read)()})


def streamed(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"start "
        row = OrganisationSettings.objects.get(pk=pk)   # read while the body is sent
        yield b"set" if row.get_llm_api_key("openai") else b"unset"

    return StreamingHttpResponse(chunks())


async def direct_async(request: HttpRequest, pk: int) -> JsonResponse:
    """An async view that uses the manager without sync_to_async (a blocking read)."""
    from keysafe.integrations.django import secret_manager

    who = secret_manager().actor
    return JsonResponse({"actor": who})


def actor_of(request: Any) -> str:
    return f"custom:{request.headers.get('X-Caller', 'nobody')}"
