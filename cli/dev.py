"""`irq dev`: the whole system on one machine, as child processes stopped together on Ctrl-C."""

from __future__ import annotations

import secrets
import signal
import socket
import sys
import time

from cli.stack import Stack, StackEnv, redis_answers
from irq.settings import Settings


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _ports_taken(settings: Settings) -> list[str]:
    return [
        f"{what} port {port}"
        for what, host, port in [
            ("API", settings.api_host, settings.api_port),
            ("inference", settings.inference_host, settings.inference_port),
            ("Flower", settings.flower_address, settings.flower_port),
        ]
        if port_taken(host, port)
    ]


def dev_stack(settings: Settings, flower_auth: str) -> Stack:
    """The stack of `irq dev`: `settings`' store, Redis and ports, its services printing to this terminal
    and running in this folder (where `.env` and a relative SQLite path are)."""
    extra = {"IRQ_FLOWER_BASIC_AUTH": flower_auth}
    if settings.engine == "local" and "worker_concurrency" not in settings.model_fields_set:
        extra["IRQ_WORKER_CONCURRENCY"] = "2"  # the local engine generates one request at a time
    config = StackEnv(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        api_port=settings.api_port,
        inference_port=settings.inference_port,
        inference_url=settings.inference_url,
        engine=settings.engine,
        extra=extra,
    )
    return Stack(config, log_dir=None)


def run_dev(settings: Settings) -> int:
    # Ctrl-C and a plain `kill` both stop everything cleanly (a shell may start this with SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    taken = _ports_taken(settings)
    if taken:
        print(f"already in use: {', '.join(taken)} (is another irq running?)", file=sys.stderr)
        return 2
    flower_auth = settings.flower_basic_auth.get_secret_value() or f"irq:{secrets.token_urlsafe(12)}"
    stack = dev_stack(settings, flower_auth)
    try:
        if not redis_answers(settings.redis_url):
            print(f"no Redis at {settings.redis_url}: starting one", flush=True)
            stack.start_redis()
        db, [key] = stack.prepare_store("dev")
        db.dispose()
        inference = stack.start_inference(wait=False)
        stack.start_worker()
        api = stack.start_api(wait=False)
        stack.start_flower()
        stack.wait_inference(inference)
        print("loading the model (first start dequantizes it; later starts use the cache) ...", flush=True)
        stack.warm_up()
        stack.wait_api(api)
        print(_banner(settings, stack.api_url, key, flower_auth), flush=True)
        while stack.running():
            time.sleep(0.5)
        print("a service stopped; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _banner(settings: Settings, api_base: str, key: str, flower_auth: str) -> str:
    return (
        f"\nirq is running.\n  API:     {api_base}  (docs: {api_base}/docs)\n  API key: {key}\n"
        f"  Flower:  http://127.0.0.1:{settings.flower_port}  (basic auth {flower_auth})\n"
        f"  Store:   {settings.database_url}\n  Redis:   {settings.redis_url}\n\n"
        f"  export IRQ_API_KEY={key}   # read by the CLI (.venv/bin/irq submit …) and the curl below\n"
        f'  curl -s -H "Authorization: Bearer $IRQ_API_KEY" -d \'{{"prompt": "Create a function that returns '
        f"the maximum of a list\"}}' {api_base}/v1/jobs\n\nCtrl-C stops everything."
    )
