"""The HTTP adapter of the inference client: POST /generate to one URL, faults typed for the retry policy."""

from __future__ import annotations

import functools
import socket
import ssl
import threading
from typing import Any

import httpx

from inference.abort import Abort, Aborted
from inference.errors import EndpointDown, RetryableInferenceError, fault_from_body
from inference.protocol import GenerateRequest, GenerateResponse, decode_response
from irq.endpoints import Endpoint
from irq.error_codes import ErrorCode
from irq.settings import Settings, derive_health_url

HEALTH_TIMEOUT_S = 10.0
# httpx's trace events (its `trace` request extension) that hand over a connection's new network stream.
_NEW_STREAM = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class _Line:
    """One thread's connection to the endpoint, as far as aborting a request goes: the socket its pool
    opened last (a thread sends one request at a time, so the pool holds one connection), and the abort of
    the request on it now. Shutting the socket down wakes the thread from its read at once, and the service
    sees the client leave and stops the generation (`inference/service.py`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._abort: Abort | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in _NEW_STREAM:
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._sock = sock
        elif event == "http11.send_request_headers.started":
            with self._lock:
                abort = self._abort
            if abort is not None:
                abort.check("sending the request")

    def carrying(self, abort: Abort | None) -> None:
        with self._lock:
            self._abort = abort

    def cut(self, abort: Abort) -> None:
        """Shut the connection down if it still carries the request of `abort` (not a later one's)."""
        with self._lock:
            if self._abort is not abort or self._sock is None:
                return
            # The socket layer's own shutdown, not ssl.SSLSocket's: that one would also drop the TLS state
            # the reading thread is using.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class HttpInferenceClient:
    """Speaks the inference protocol to one generate URL; one instance per worker process.

    Each thread gets its own connection pool: with hundreds of worker threads sharing one httpx pool,
    connections were seen closed under a reader (`ReadError: Bad file descriptor`) on the GPU host. They
    share one TLS context, made when the worker starts: building one per client (loading the CA bundle)
    cost 20 ms a client, 1.30 s for 64, against 0.053 s with the shared one (2-core machine, the snippet in
    docs/benchmarks.md), and it was paid by each thread's first job.
    """

    def __init__(self, endpoint: Endpoint, settings: Settings) -> None:
        self.url = endpoint.url
        self.health_url = derive_health_url(endpoint.url)
        self._headers = endpoint.headers()
        self._timeout = httpx.Timeout(
            settings.default_timeout_s, connect=settings.inference_connect_timeout_s
        )
        self._tls = ssl.create_default_context()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(headers=self._headers, timeout=self._timeout, verify=self._tls)
            self._local.client = client
            self._local.line = _Line()
            with self._lock:
                self._clients.append(client)
        return client

    def generate(
        self, request: GenerateRequest, timeout_s: float, abort: Abort | None = None
    ) -> GenerateResponse:
        body = request.model_dump(by_alias=True)
        http = self._http
        line: _Line = self._local.line
        if abort is not None:
            abort.check("sending the request")
            line.carrying(abort)
            abort.on_set(functools.partial(line.cut, abort))
        try:
            response = http.post(self.url, json=body, timeout=timeout_s, extensions={"trace": line.trace})
        except httpx.TransportError as exc:
            if abort is not None and abort.is_set:
                raise Aborted(f"the request was dropped ({type(exc).__name__})") from exc
            raise _transport_fault(exc, timeout_s) from exc
        finally:
            line.carrying(None)
        return self._parse(response)

    def healthy(self) -> bool:
        try:
            return self._http.get(self.health_url, timeout=HEALTH_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def _parse(self, response: httpx.Response) -> GenerateResponse:
        if response.status_code >= 400:
            try:
                body: object = response.json()
            except ValueError:
                body = response.text
            raise fault_from_body(response.status_code, body)
        try:
            body = response.json()
        except ValueError as exc:
            message = f"unreadable response: {exc}"
            raise RetryableInferenceError(ErrorCode.inference_bad_response, message) from exc
        return decode_response(body)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


def _transport_fault(exc: httpx.TransportError, timeout_s: float) -> RetryableInferenceError:
    """A request that got no answer: `EndpointDown` when it never reached the endpoint."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return EndpointDown(ErrorCode.inference_unreachable, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return RetryableInferenceError(ErrorCode.inference_timeout, f"no answer within {timeout_s:.0f} s")
    return RetryableInferenceError(ErrorCode.inference_unreachable, f"{type(exc).__name__}: {exc}")
