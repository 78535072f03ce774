"""The HTTP client workers use to call an inference endpoint, with faults typed for the retry policy."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from inference.protocol import GenerateResponse, request_body
from irq.settings import Settings

if TYPE_CHECKING:
    from inference.modal_client import ModalInferenceClient


class InferenceError(Exception):
    """An inference call that did not produce a document; `code` is stored on the job."""

    retryable = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RetryableInferenceError(InferenceError):
    """Worth another attempt: connection errors, timeouts, 5xx, 429, cold starts."""

    retryable = True


class PermanentInferenceError(InferenceError):
    """Another attempt would fail the same way: the endpoint refused this request (4xx)."""


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:500]
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, dict):
            return detail.get("code"), str(detail.get("message", detail))
        return body.get("code"), str(body.get("message", detail))
    return None, str(body)[:500]


class InferenceClient:
    """Speaks the inference protocol to one generate URL; one instance per worker process.

    Each thread gets its own connection pool: with hundreds of worker threads sharing one httpx pool,
    connections were seen closed under a reader (`ReadError: Bad file descriptor`) on the GPU host.
    """

    def __init__(self, settings: Settings) -> None:
        self.url = settings.inference_url
        self._headers = {k: v.get_secret_value() for k, v in settings.inference_headers.items()}
        self._timeout = httpx.Timeout(
            settings.default_timeout_s, connect=settings.inference_connect_timeout_s
        )
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(headers=self._headers, timeout=self._timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def generate(
        self,
        *,
        prompt: str,
        schema: dict[str, Any],
        max_tokens: int,
        temperature: float,
        top_p: float,
        timeout_s: float,
    ) -> GenerateResponse:
        body = request_body(prompt, schema, max_tokens, temperature, top_p)
        try:
            response = self._http.post(self.url, json=body, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise RetryableInferenceError("inference_timeout", f"no answer within {timeout_s:.0f} s") from exc
        except httpx.TransportError as exc:
            raise RetryableInferenceError("inference_unreachable", f"{type(exc).__name__}: {exc}") from exc
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> GenerateResponse:
        status = response.status_code
        if status == 429 or status >= 500:
            code, message = _error_detail(response)
            raise RetryableInferenceError(code or f"inference_http_{status}", f"HTTP {status}: {message}")
        if status >= 400:
            code, message = _error_detail(response)
            raise PermanentInferenceError(code or f"inference_http_{status}", f"HTTP {status}: {message}")
        try:
            body = response.json()
            if isinstance(body, dict) and "text" not in body and "ir_json" in body:
                body["text"] = body.pop("ir_json")  # the older deployments' key
            return GenerateResponse.model_validate(body)
        except (ValueError, ValidationError) as exc:
            raise RetryableInferenceError("inference_bad_response", f"unreadable response: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


def connect(settings: Settings) -> InferenceClient | ModalInferenceClient:
    """The client for `settings.inference_url`: HTTP, or the Modal SDK for `modal://<app>`."""
    from inference.modal_client import MODAL_SCHEME, ModalInferenceClient

    if settings.inference_url.startswith(MODAL_SCHEME):
        return ModalInferenceClient(settings)
    return InferenceClient(settings)
