"""Bearer-token auth for the HTTP face, with the gRPC API's token (`<home>/api.token`).

The dashboard's page itself holds no data and stays open (it asks for the token and sends it with
every call it makes); the health probe stays open for supervisors. Everything else, `/metrics`
included, needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from node.http.errors import HttpError, error_body

OPEN_PATHS = frozenset({"/", "/healthz", "/dashboard.js"})


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        refused = HttpError(
            "a valid bearer token is required (the node's api.token)",
            status=401,
            code="invalid_api_key",
            kind="authentication_error",
        )
        body = json.dumps(error_body(refused)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False
