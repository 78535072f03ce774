"""The client workers use to call a deployed Modal inference app through the Modal SDK, not over HTTP.

It speaks to `Inference.generate` (inference/modal_app.py): the POST /generate body in, the response body
out, or `{"status_code", "error": {code, message}}` for what the service answers with an error status.
Faults are typed like the HTTP client's (inference/errors.py), so the worker and its retry policy can use
either client.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from inference.abort import Abort, Aborted
from inference.errors import InferenceError, RetryableInferenceError, fault_from_body
from inference.protocol import GenerateRequest, GenerateResponse, decode_response
from irq.endpoints import Endpoint
from irq.error_codes import ErrorCode

if TYPE_CHECKING:
    import modal

APP_PREFIX = "irq-inference"
CLASS_NAME = "Inference"
MODAL_SCHEME = "modal://"  # an endpoint URL modal://<app> sends the worker through the Modal SDK


def modal_app_name(backend: str) -> str:
    """One deployment per structured-output backend, side by side: irq-inference-guidance, -xgrammar, …"""
    return f"{APP_PREFIX}-{backend}"


def app_from_url(url: str) -> str:
    """`modal://irq-inference-guidance[/…]` names the app; any other URL names none."""
    if not url.startswith(MODAL_SCHEME):
        return ""
    return url[len(MODAL_SCHEME) :].split("/", 1)[0]


def parse_result(result: object) -> GenerateResponse:
    """The response of `Inference.generate`, or its error typed for the retry policy."""
    if isinstance(result, dict) and "error" in result:
        raise _error(result)
    return decode_response(result)


def _error(result: dict[str, Any]) -> InferenceError:
    return fault_from_body(int(result.get("status_code") or 500), result["error"])


def typed_fault(exc: BaseException, timeout_s: float) -> RetryableInferenceError:
    """A Modal SDK failure as a retryable fault: none of them says that this request is at fault."""
    from modal import exception as modal_exc

    if isinstance(exc, TimeoutError | modal_exc.TimeoutError):
        return RetryableInferenceError(ErrorCode.inference_timeout, f"no answer within {timeout_s:.0f} s")
    if isinstance(exc, modal_exc.NotFoundError | modal_exc.AuthError | modal_exc.ConnectionError | OSError):
        return RetryableInferenceError(ErrorCode.inference_unreachable, f"{type(exc).__name__}: {exc}")
    # An exception raised in the app's own code, or Modal's: the equivalent of a 5xx.
    return RetryableInferenceError(ErrorCode.inference_remote_error, f"{type(exc).__name__}: {exc}")


class ModalInferenceClient:
    """Calls `Inference.generate` of one deployed app; one per worker process, like the HTTP client."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.app_name = app_from_url(endpoint.url) or modal_app_name(endpoint.backend)
        self.url = f"{MODAL_SCHEME}{self.app_name}/{CLASS_NAME}.generate"
        self._instance: Any = None

    def _inference(self) -> Any:
        """The deployed class's instance handle; looked up lazily, so building the client needs no network."""
        if self._instance is None:
            import modal

            cls: modal.Cls = modal.Cls.from_name(self.app_name, CLASS_NAME)
            self._instance = cls()
        return self._instance

    def generate(
        self, request: GenerateRequest, timeout_s: float, abort: Abort | None = None
    ) -> GenerateResponse:
        body = request.model_dump(by_alias=True)
        call = None
        try:
            if abort is not None:
                abort.check("spawning the call")
            # spawn + get, not remote: get() takes a timeout; remote() waits as long as the function may run.
            call = self._inference().generate.spawn(body)
            if abort is not None:
                # Cancelling the call cancels the method's coroutine in the container, and with it the
                # generation (the service's request is cancelled, and the engine stops).
                abort.on_set(functools.partial(_cancel, call))
            result = call.get(timeout=timeout_s)
        except Aborted:
            raise
        except Exception as exc:
            if abort is not None and abort.is_set:
                raise Aborted(f"the call was cancelled ({type(exc).__name__})") from exc
            if call is not None and isinstance(exc, TimeoutError):
                _cancel(call)
            raise typed_fault(exc, timeout_s) from exc
        return parse_result(result)

    def healthy(self) -> bool:
        """Always: Modal starts a container for a call to an app scaled to zero, and a call that cannot be
        made is a retryable fault."""
        return True

    def close(self) -> None:
        """Nothing to release: the Modal client is shared by the process and closes with it."""
        self._instance = None


def _cancel(call: Any) -> None:
    """Stop a call we gave up on, so that its GPU time goes to requests someone still waits for."""
    try:
        call.cancel()
    except Exception:  # best effort: the call may have finished or the connection may be gone
        pass
