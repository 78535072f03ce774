"""The inference client workers hold: one interface, an HTTP and a Modal adapter behind it."""

from __future__ import annotations

from typing import Protocol

from inference.abort import Abort
from inference.http_client import HttpInferenceClient
from inference.modal_client import MODAL_SCHEME, ModalInferenceClient
from inference.protocol import GenerateRequest, GenerateResponse
from irq.endpoints import Endpoint
from irq.settings import Settings


class InferenceClient(Protocol):
    """Generates one document per call; its faults are `inference.errors.InferenceError`s."""

    url: str  # where the calls go, for the job's record and the logs

    def generate(
        self, request: GenerateRequest, timeout_s: float, abort: Abort | None = None
    ) -> GenerateResponse:
        """`EndpointDown` when the request never reached the endpoint (nothing listens, or no connection
        could be made): the job did not run, so it waits for the endpoint instead of spending an attempt.
        `Aborted` when `abort` was set (by another thread) before an answer came: the request was dropped,
        and the endpoint stops generating it."""
        ...

    def healthy(self) -> bool:
        """Whether the endpoint answers its health check (a cold one that will load on demand does)."""
        ...

    def close(self) -> None: ...


def connect(endpoint: Endpoint, settings: Settings) -> InferenceClient:
    """The client for `endpoint`: HTTP, or the Modal SDK for `modal://<app>`."""
    if endpoint.url.startswith(MODAL_SCHEME):
        return ModalInferenceClient(endpoint)
    return HttpInferenceClient(endpoint, settings)
