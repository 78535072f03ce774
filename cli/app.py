"""The `irq` command: thin wrappers that parse arguments and call the same functions as the API and tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from cli.bench import bench_app
from irq.settings import get_settings

if TYPE_CHECKING:
    from irq.store.db import Database

app = typer.Typer(help="irq: schema-constrained IR generation jobs.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
inference_app = typer.Typer(help="The inference service.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(inference_app, name="inference")
batch_app = typer.Typer(help="Batches of jobs.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
app.add_typer(bench_app, name="bench")


@app.command()
def dev() -> None:
    """Run the whole system on one machine: store, Redis, inference service, worker, API and Flower."""
    from cli.dev import run_dev

    raise typer.Exit(run_dev(get_settings()))


@app.command()
def api() -> None:
    """Serve the REST API."""
    import uvicorn

    s = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=s.api_host,
        port=s.api_port,
        workers=s.api_workers,
        log_level="info",
    )


@app.command()
def worker(
    endpoint: Annotated[
        list[str] | None,
        typer.Option(help="An endpoint of the registry to serve; repeat for several. Default: all of them."),
    ] = None,
) -> None:
    """Run Celery workers that execute jobs: one process per endpoint, taking jobs from its queue with as
    many threads as the endpoint takes requests at once."""
    from worker.main import run_workers

    raise typer.Exit(run_workers(get_settings(), endpoint or []))


@app.command()
def flower() -> None:
    """Serve Flower, Celery's dashboard, behind basic auth (IRQ_FLOWER_BASIC_AUTH=user:password)."""
    from irq.broker import make_celery

    s = get_settings()
    auth = s.flower_basic_auth.get_secret_value()
    if not auth:
        typer.echo(
            "IRQ_FLOWER_BASIC_AUTH (user:password) must be set: Flower is never served without auth.",
            err=True,
        )
        raise typer.Exit(2)
    _flower_auth_everywhere()
    # Flower shows queue lengths by the broker URL's scheme, which the workers' transport class would
    # replace; reading events and queues needs none of its speed.
    make_celery(s, stock_transport=True).start(
        ["flower", f"--port={s.flower_port}", f"--address={s.flower_address}", f"--basic-auth={auth}"]
    )


def _flower_auth_everywhere() -> None:
    """Flower 2 serves `/metrics` (its task and worker metrics) and `/healthcheck` to anyone, even with
    basic auth on: make them ask for it too."""
    import tornado.web
    from flower.views.monitor import Healthcheck, Metrics

    for handler in (Metrics, Healthcheck):
        handler.get = tornado.web.authenticated(handler.get)


@inference_app.command("serve")
def inference_serve(
    engine: Annotated[str | None, typer.Option(help="local, vllm or simulated.")] = None,
) -> None:
    """Serve the inference protocol (/generate, /health, /warmup) over an engine (over IRQ_INFERENCE_REPLICAS
    engines, each a service of its own on consecutive ports)."""
    from inference.replicas import serve_replicas
    from inference.service import serve

    s = get_settings()
    if engine is not None:
        s = s.model_copy(update={"engine": engine})
    if s.inference_replicas > 1:
        raise typer.Exit(serve_replicas(s))
    serve(s)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to IRQ_DATABASE_URL."""
    from irq.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("prune")
def db_prune(
    older_than_days: Annotated[
        float | None, typer.Option(help="Default: IRQ_RETENTION_DAYS (what the sweeper prunes to).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Append every deleted job to this file first, as a JSON line.")
    ] = None,
) -> None:
    """Delete the jobs that finished more than the given days ago (their batches and uploaded files too);
    the rollups keep counting them in /v1/stats, /dashboard and /metrics."""
    from datetime import timedelta

    from irq.clock import utcnow
    from irq.files import FileStorage
    from irq.retention import prune
    from irq.store.db import Database

    s = get_settings()
    days = s.retention_days if older_than_days is None else older_than_days
    db = Database(s.database_url)
    before = utcnow() - timedelta(days=days)
    with export.open("a", encoding="utf-8") if export else _no_file() as out:
        report = prune(db, FileStorage(s.files_dir), before, export=out, lag_s=s.rollup_lag_s)
    db.dispose()
    typer.echo(f"pruned {report.jobs} job(s), {report.batches} batch(es), {report.files} file(s)")


def _no_file() -> Any:
    import contextlib

    return contextlib.nullcontext(None)


def _migrated_store() -> Database:
    """The store's `Database`, once it is known to be migrated; else the reason and what to run, and exit 2
    (no traceback, and no empty SQLite file left behind)."""
    from irq.store.db import Database
    from irq.store.revision import store_problem

    url = get_settings().database_url
    if problem := store_problem(url):
        typer.echo(problem, err=True)
        raise typer.Exit(2)
    return Database(url)


@keys_app.command("create")
def keys_create(name: str, admin: bool = False) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from irq.keys import create_key

    db = _migrated_store()
    typer.echo(create_key(db, name, admin=admin))
    db.dispose()


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys (never the keys themselves: their first characters)."""
    from irq.store.keys import list_keys

    db = _migrated_store()
    for k in list_keys(db):
        revoked = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        role = "admin" if k.is_admin else "user"
        typer.echo(f"{k.id}\t{k.name}\t{k.prefix}…\t{role}\t{k.created_at:%Y-%m-%d %H:%M}\t{revoked}")
    db.dispose()


@keys_app.command("revoke")
def keys_revoke(name_or_prefix: str) -> None:
    """Revoke the keys with this name (or this prefix, as `irq keys list` shows it), in every API process at
    once."""
    from irq.keys import revoke

    s = get_settings()
    db = _migrated_store()
    revoked = revoke(db, s.redis_url, name_or_prefix.rstrip("…"))
    db.dispose()
    if not revoked:
        typer.echo(f"no active key named or starting {name_or_prefix!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {len(revoked)} key(s): {', '.join(map(str, revoked))}")


def _client(api_url: str | None, key: str | None) -> httpx.Client:
    s = get_settings()
    key = key or s.api_key.get_secret_value()
    if not key:
        typer.echo("an API key is needed: --key or IRQ_API_KEY", err=True)
        raise typer.Exit(2)
    return httpx.Client(
        base_url=api_url or f"http://{s.api_host}:{s.api_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=90,
    )


def _show(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    typer.echo(json.dumps(body, indent=2))
    if response.status_code >= 400:
        raise typer.Exit(1)
    return body


ApiOpt = Annotated[str | None, typer.Option("--api", help="API base URL.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="API key (default IRQ_API_KEY).")]
ModelOpt = Annotated[str | None, typer.Option(help="A model of `GET /v1/models` (default: the API's).")]
BackendOpt = Annotated[str | None, typer.Option(help="A backend it is served with (default: its first).")]


def _route(model: str | None, backend: str | None) -> dict[str, str]:
    return {k: v for k, v in (("model", model), ("backend", backend)) if v is not None}


@app.command()
def submit(
    prompt: str,
    schema: Annotated[Path | None, typer.Option(help="JSON Schema file (default: the IR schema).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = False,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    api_url: ApiOpt = None,
    key: KeyOpt = None,
) -> None:
    """Submit a job and print it; with --wait, print it once it has finished."""
    from irq.store.models import TERMINAL

    body: dict[str, Any] = {"prompt": prompt, **_route(model, backend)}
    if schema is not None:
        body["schema"] = json.loads(schema.read_text())
    with _client(api_url, key) as http:
        response = http.post("/v1/jobs", json=body)
        if not wait or response.status_code >= 400:
            _show(response)
            return
        job_id = response.json()["id"]
        while True:
            job = http.get(f"/v1/jobs/{job_id}", params={"wait": 60})
            if job.status_code >= 400 or job.json()["status"] in TERMINAL:
                body = _show(job)
                raise typer.Exit(0 if body.get("status") == "succeeded" else 1)


@batch_app.command("submit")
def batch_submit(
    file: Path,
    wait: Annotated[bool, typer.Option(help="Follow the batch to its end with a progress bar.")] = False,
    out: Annotated[Path | None, typer.Option(help="With --wait: write the results here as JSONL.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Run every job with this model (a line's own is replaced).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Run every job with this backend.")] = None,
    api_url: ApiOpt = None,
    key: KeyOpt = None,
) -> None:
    """Submit a JSON or JSONL file of jobs (OpenAI Batch API lines too) as one batch.

    Running it again with the same file does not submit it twice: the upload's Idempotency-Key is the
    file's SHA-256 (and the --model and --backend given), so a re-run finds the batch and resumes following
    it.
    """
    import hashlib

    from cli.batches import follow

    content = file.read_bytes()
    route = _route(model, backend)
    fingerprint = content + (json.dumps(route, sort_keys=True).encode() if route else b"")
    idempotency_key = "file-sha256:" + hashlib.sha256(fingerprint).hexdigest()
    with _client(api_url, key) as http:
        response = http.post(
            "/v1/batches",
            content=content,
            params=route,
            headers={"Content-Type": "application/jsonl", "Idempotency-Key": idempotency_key},
        )
        if not wait or response.status_code >= 400:
            _show(response)
            return
        batch = response.json()
        typer.echo(
            f"batch {batch['id']} ({'submitted' if response.status_code == 202 else 'resumed'})", err=True
        )
        final = follow(http, batch["id"], out)
    raise typer.Exit(0 if final["counts"].get("succeeded", 0) == final["total"] else 1)


@app.command()
def status(job_id: str, api_url: ApiOpt = None, key: KeyOpt = None) -> None:
    """Print a job."""
    with _client(api_url, key) as http:
        _show(http.get(f"/v1/jobs/{job_id}"))
