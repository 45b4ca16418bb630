"""The `metrics_bind` listener: `/metrics` (Prometheus), `/healthz` and `/readyz`, in threads.

A WSGI app on the standard library's server, one thread per request, beside the asyncio loop of
the join service, so a slow scrape never delays a join. `krnet serve` starts it before the
service and stops it with the service (docs/operations.md, "Metrics" and "Health").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector

from krnet.core.control.metrics import KrnetCollector, NodeView
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.core.model.settings import LoadedSettings

log = logging.getLogger("krnet.metrics")

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
TEXT = ("Content-Type", "text/plain; charset=utf-8")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line each."""


def registry_for(view: NodeView) -> CollectorRegistry:
    """A registry of this node's krnet metrics plus the process's own (CPU, memory, fds)."""
    registry = CollectorRegistry()
    registry.register(KrnetCollector(view))
    ProcessCollector(registry=registry)
    return registry


def make_app(view: NodeView) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """The WSGI app: /metrics, /healthz (the process serves), /readyz (the overlay is up)."""
    metrics = make_wsgi_app(registry_for(view))

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # a new header list each time: wsgiref adds Content-Length to the one it is given
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [TEXT])
            return [b"ok\n"]
        if path == "/readyz":
            missing = view.not_ready()
            if missing is None:
                start_response("200 OK", [TEXT])
                return [b"ready\n"]
            start_response("503 Service Unavailable", [TEXT])
            return [f"not ready: {missing}\n".encode()]
        start_response("404 Not Found", [TEXT])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


class MetricsServer:
    """The listener on `metrics_bind`, serving in a daemon thread until `stop`."""

    def __init__(self, loaded: LoadedSettings, view: NodeView | None = None) -> None:
        bind = loaded.settings.metrics_bind
        address, _, port = bind.rpartition(":")
        self.view = view or NodeView(loaded)
        try:
            self._server = make_server(
                address,
                int(port),
                make_app(self.view),
                server_class=_ThreadingServer,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise KrnetError(
                f"cannot listen on metrics_bind {bind} ({exc.strerror}): stop the process using "
                'it, or set metrics_bind to a free address:port ("" for no metrics)'
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="krnet-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s/metrics (/healthz, /readyz)", self._bind())

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _bind(self) -> str:
        return f"{self._server.server_address[0]!s}:{self.port}"
