from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

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


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def signs_in_itself(request: HttpRequest, pk: int) -> JsonResponse:
    """Authentication in the view (as Django REST framework does it)."""
    from django.contrib.auth.models import User

    request.user = User.objects.get(username=request.headers["X-User"])
    row = OrganisationSettings.objects.get(pk=pk)
    return JsonResponse({"set": row.get_llm_api_key("openai") is not None})


def broken_actor(request: Any) -> str:
    raise RuntimeError("the directory is down")


def actor_of(request: Any) -> str:
    return f"custom:{request.headers.get('X-Caller', 'nobody')}"
