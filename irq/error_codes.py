"""Every machine-readable error code irq stores on a job or answers in an error body: one enum, so that the
lifecycle, the worker, the inference clients, the API and the OpenAI surface name a failure the same way.
Its values are stored and returned as they are: never rename one."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # A job's end, recorded by the lifecycle and the worker.
    cancelled = "cancelled"
    batch_expired = "batch_expired"
    timeout = "timeout"  # past the job's deadline; on the chat endpoint, not finished within the wait
    worker_lost = "worker_lost"
    internal_error = "internal_error"
    endpoint_unavailable = "endpoint_unavailable"
    model_unavailable = "model_unavailable"
    model_mismatch = "model_mismatch"
    schema_mismatch = "schema_mismatch"
    output_truncated = "output_truncated"
    hollow_output = "hollow_output"
    invalid_output = "invalid_output"

    # An inference call's fault (an endpoint's own code, or `inference_http_<status>`, may stand instead).
    grammar_error = "grammar_error"
    prompt_too_long = "prompt_too_long"
    engine_error = "engine_error"
    client_closed = "client_closed"
    inference_bad_response = "inference_bad_response"
    inference_timeout = "inference_timeout"
    inference_unreachable = "inference_unreachable"
    inference_remote_error = "inference_remote_error"

    # A schema the checker refuses, at submit or (`schema_unsupported`) on the worker.
    invalid_schema = "invalid_schema"
    schema_too_deep = "schema_too_deep"
    schema_too_large = "schema_too_large"
    schema_too_complex = "schema_too_complex"
    schema_unsupported = "schema_unsupported"
    checks_busy = "checks_busy"
    checks_unavailable = "checks_unavailable"

    # A request refused.
    invalid_request = "invalid_request"
    invalid_json = "invalid_json"
    unsupported_parameter = "unsupported_parameter"
    unknown_parameter = "unknown_parameter"
    model_not_served = "model_not_served"
    prompt_too_large = "prompt_too_large"
    batch_too_large = "batch_too_large"
    duplicate_custom_id = "duplicate_custom_id"
    invalid_url = "invalid_url"
    invalid_endpoint = "invalid_endpoint"
    invalid_completion_window = "invalid_completion_window"
    empty_file = "empty_file"
    too_many_lines = "too_many_lines"
    file_too_large = "file_too_large"
    input_file_in_use = "input_file_in_use"
    batch_not_cancellable = "batch_not_cancellable"
    idempotency_key_reused = "idempotency_key_reused"
    body_too_large = "body_too_large"
    body_timeout = "body_timeout"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    not_found = "not_found"
    expired = "expired"  # a job or batch past the retention time
    rate_limited = "rate_limited"
    quota_exceeded = "quota_exceeded"

    # A service irq needs is down.
    broker_unavailable = "broker_unavailable"
    store_unavailable = "store_unavailable"
