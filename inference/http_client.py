"""The HTTP adapter of the inference client: POST /generate to one URL, faults typed for the retry policy."""

from __future__ import annotations

import ssl
import threading

import httpx

from inference.errors import EndpointDown, RetryableInferenceError, fault_from_body
from inference.protocol import GenerateRequest, GenerateResponse, decode_response
from irq.endpoints import Endpoint
from irq.settings import Settings, derive_health_url

HEALTH_TIMEOUT_S = 10.0


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
            with self._lock:
                self._clients.append(client)
        return client

    def generate(self, request: GenerateRequest, timeout_s: float) -> GenerateResponse:
        body = request.model_dump(by_alias=True)
        try:
            response = self._http.post(self.url, json=body, timeout=timeout_s)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointDown("inference_unreachable", f"{type(exc).__name__}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise RetryableInferenceError("inference_timeout", f"no answer within {timeout_s:.0f} s") from exc
        except httpx.TransportError as exc:
            raise RetryableInferenceError("inference_unreachable", f"{type(exc).__name__}: {exc}") from exc
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
            raise RetryableInferenceError("inference_bad_response", f"unreadable response: {exc}") from exc
        return decode_response(body)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
