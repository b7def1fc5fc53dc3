"""Key-check endpoints of API providers (OpenAI, Anthropic, Google Gemini, Slack,
Cohere, Deepgram), on 127.0.0.1.

STAND-IN: these providers cannot be reached from here (no internet). Each route answers
the way its provider's API reference documents for a good and a bad key: OpenAI and
Anthropic 401, Google 400 ``API_KEY_INVALID``, Slack 200 ``{"ok": false}``, Cohere
200 ``{"valid": ...}``, and reads the key from the header that provider uses. The
tests point keysafe at it with a team catalog file (``check = {url = ...}``), the same
way a team routes checks through its own gateway. It is not the real service.
"""

from __future__ import annotations

from ._http import LoopbackServer, Request, Response

#: route -> (how the key is read, what a bad key gets)
ROUTES = {
    ("GET", "/v1/models"): "bearer",                 # OpenAI
    ("GET", "/anthropic/v1/models"): "x-api-key",     # Anthropic
    ("GET", "/v1beta/models"): "x-goog-api-key",      # Google Gemini
    ("POST", "/api/auth.test"): "slack",              # Slack
    ("POST", "/v1/check-api-key"): "cohere",          # Cohere
    ("GET", "/v1/auth/token"): "token",               # Deepgram
}


class ProviderStandin(LoopbackServer):
    """``good`` keys are accepted everywhere; anything else is refused. ``seen`` keeps
    each request's (path, the key as received) for the tests to inspect."""

    def __init__(self, good: set[str]) -> None:
        super().__init__()
        self.good = good
        self.seen: list[tuple[str, str | None, dict[str, str]]] = []

    def handle(self, request: Request) -> Response:
        how = ROUTES.get((request.method, request.path))
        if how is None:
            return self.error(404, "no such route")
        key = self._key(how, request.headers)
        self.seen.append((request.path, key, request.headers))
        ok = key in self.good
        if how == "slack":
            return Response(200, {"ok": ok} if ok else {"ok": False, "error": "invalid_auth"})
        if how == "cohere":
            return Response(200, {"valid": ok}) if ok else Response(401, {"message": "bad"})
        if how == "x-api-key" and request.headers.get("anthropic-version") is None:
            return self.error(400, "anthropic-version header is required")
        if ok:
            return Response(200, {"data": []})
        if how == "x-goog-api-key":
            return Response(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                            "message": "API key not valid."}})
        return self.error(401, "Incorrect API key provided")

    @staticmethod
    def _key(how: str, headers: dict[str, str]) -> str | None:
        if how in ("x-api-key", "x-goog-api-key"):
            return headers.get(how)
        auth = headers.get("authorization", "")
        scheme = "Token " if how == "token" else "Bearer "
        return auth[len(scheme):] if auth.startswith(scheme) else None

    def error(self, status: int, message: str) -> Response:
        return Response(status, {"error": {"message": message}})
