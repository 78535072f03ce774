"""The inference client workers hold: one interface, an HTTP and a Modal adapter behind it."""

from __future__ import annotations

from typing import Protocol

from inference.http_client import HttpInferenceClient
from inference.modal_client import MODAL_SCHEME, ModalInferenceClient
from inference.protocol import GenerateRequest, GenerateResponse
from irq.settings import Settings


class InferenceClient(Protocol):
    """Generates one document per call; its faults are `inference.errors.InferenceError`s."""

    url: str  # where the calls go, for the job's record and the logs

    def generate(self, request: GenerateRequest, timeout_s: float) -> GenerateResponse: ...

    def close(self) -> None: ...


def connect(settings: Settings) -> InferenceClient:
    """The client for `settings.inference_url`: HTTP, or the Modal SDK for `modal://<app>`."""
    if settings.inference_url.startswith(MODAL_SCHEME):
        return ModalInferenceClient(settings)
    return HttpInferenceClient(settings)
