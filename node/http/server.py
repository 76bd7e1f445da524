"""`HttpServer`: the HTTP face as a node component — uvicorn serving the ASGI app on a socket the
node binds as it builds (so a `:0` port is known and a taken one stops the start with a clear
error), run under the node's TaskGroup with a `ready` event and no signal handlers of its own
(the node has those). `close()` releases the socket once the node is done with it."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from node.api.auth import ensure_token
from node.config import HttpSettings, Settings
from node.domain.service import NodeServices
from node.errors import ConfigError
from node.http.asgi import build_app
from node.logging import get_logger
from node.metrics import NodeMetrics

log = get_logger(__name__)


def check_exposure(settings: HttpSettings) -> None:
    """Refuse to serve the API to other machines without a token: it spends this node's deposit."""
    if not settings.loopback and not settings.require_token:
        raise ConfigError(
            f"the HTTP API would listen on {settings.listen} without a token",
            hint="set http.require_token = true (callers send the node's api.token as a bearer "
            "token), or listen on 127.0.0.1",
        )


class HttpServer:
    def __init__(self, services: NodeServices, settings: Settings, metrics: NodeMetrics) -> None:
        http = settings.http
        check_exposure(http)
        token = ensure_token(settings.home) if http.require_token else None
        self.settings = http
        self.app = build_app(services, http, metrics, token=token)
        self.ready = asyncio.Event()
        self.port = 0
        # Bound now, so a taken port stops the node while it starts, with the error to fix.
        self._socket = self._bind()

    def close(self) -> None:
        self._socket.close()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (a name to show)
        return f"http://{shown}:{self.port}"

    async def run(self) -> None:
        sock = self._socket
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
            ws="none",
        )
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
            self.ready.set()
            log.info("http_listening", url=self.url)
            await server.main_loop()
        finally:
            self.ready.clear()
            server.should_exit = True
            if server.started:
                await asyncio.shield(server.shutdown(sockets=[sock]))
            log.info("http_stopped", url=self.url)

    def _bind(self) -> socket.socket:
        host = self.settings.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Named TCP, so asyncio sets TCP_NODELAY on each accepted connection (it checks `proto`;
        # without it every response waits ~40 ms on a delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.settings.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the HTTP API cannot listen on {self.settings.listen}: {exc.strerror}",
                hint="another program may use that port; "
                "set http.listen (GPUNODE_HTTP__LISTEN) to a free one",
            ) from exc
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        return sock
