"""The load generators' HTTP client: many connections from one process, spread over several small pools.

httpcore's connection pool does work for every request that grows with the connections it holds and the
requests waiting on it, so one `httpx.AsyncClient` of 128–256 connections spends most of a burst in its
own bookkeeping: the client, not the server, sets the pace. `Clients` holds the same connections as pools
of at most 32, and `retrying` sends a request again after a closed connection or a 503's Retry-After.
`python -m bench.clients` measures one pool against pools of 32 on a burst of submits to `irq api` (its
own stack: Redis, SQLite, the API; no worker), the two taking turns, and prints the wall time and the CPU
of the client and of the API:

    python -m bench.clients [--jobs 600] [--concurrency 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from collections import Counter
from types import TracebackType
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

CONNECTIONS_PER_POOL = 32


class Clients:
    """`connections` connections as pools of at most `per_pool`, taken in turn by `next()`; the keyword
    arguments go to each `httpx.AsyncClient`."""

    def __init__(self, connections: int, per_pool: int = CONNECTIONS_PER_POOL, **kwargs: Any) -> None:
        pools = max(1, -(-connections // per_pool))
        size = max(1, -(-connections // pools))
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._clients = [httpx.AsyncClient(limits=limits, **kwargs) for _ in range(pools)]
        self._turn = itertools.cycle(self._clients)
        self.shape = f"{pools} × {size}"  # pools × connections each

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._clients:
            await client.aclose()


# Answers the client waited out and sent again, by reason (`busy_503`: a 503 with Retry-After, e.g. the
# API's schema checks all busy; `transport`: a connection the server closed), in this process.
RETRIES: Counter[str] = Counter()
BUSY_ATTEMPTS = 30


async def retrying(call: Any, attempts: int = 3) -> httpx.Response:
    """A request again after a transport error (a keep-alive connection the server closed as it was
    reused), or after the Retry-After of a 503 (up to BUSY_ATTEMPTS times); submits carry an
    Idempotency-Key, so a repeat never makes a second job."""
    failures = busy = 0
    while True:
        try:
            response: httpx.Response = await call()
        except httpx.TransportError:
            failures += 1
            if failures == attempts:
                raise
            RETRIES["transport"] += 1
            continue
        retry_after = response.headers.get("retry-after")
        if response.status_code == 503 and retry_after and busy < BUSY_ATTEMPTS:
            busy += 1
            RETRIES["busy_503"] += 1
            await asyncio.sleep(float(retry_after))
            continue
        return response.raise_for_status()


async def burst(api: str, key: str, jobs: int, concurrency: int, per_pool: int) -> tuple[float, str, int]:
    """Seconds for `jobs` submits, `concurrency` at a time, over pools of `per_pool` connections; the
    pools' shape; and how many submits were sent again on a fresh connection (the API closes one idle past
    its keep-alive timeout, and a client too busy to notice sends on it)."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    resent = RETRIES["transport"]
    async with Clients(concurrency, per_pool, base_url=api, headers=headers, timeout=120) as clients:

        async def one(i: int) -> None:
            body, once = {"prompt": f"burst job {i}"}, {"Idempotency-Key": uuid.uuid4().hex}
            async with gate:
                await retrying(lambda: clients.next().post("/v1/jobs", json=body, headers=once))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        return time.perf_counter() - started, clients.shape, RETRIES["transport"] - resent


def main() -> None:
    from bench.harness import group_cpu_s, stack

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = {"IRQ_RATE_LIMIT_PER_S": "0", "IRQ_MAX_INFLIGHT_JOBS": "0"}
    table = Table(title=f"{args.jobs} submits, {args.concurrency} at once, one client process")
    columns = ("round", "pools × connections", "wall s", "submits/s", "client CPU s", "API CPU s", "resent")
    for column in columns:
        table.add_column(column)
    with stack(latency_s=1.0, slots=1, worker=False, env=env) as bench:
        api = next(service for service in bench.services if service.name == "api").proc.pid
        asyncio.run(burst(bench.api, bench.key, 100, 8, 8))  # warm up the API
        for k in range(args.rounds):
            for per_pool in (args.concurrency, CONNECTIONS_PER_POOL):
                api0, client0 = group_cpu_s(api), time.process_time()
                run = burst(bench.api, bench.key, args.jobs, args.concurrency, per_pool)
                wall, shape, resent = asyncio.run(run)
                table.add_row(
                    str(k + 1),
                    shape,
                    f"{wall:.2f}",
                    f"{args.jobs / wall:.0f}",
                    f"{time.process_time() - client0:.2f}",
                    f"{group_cpu_s(api) - api0:.2f}",
                    str(resent),
                )
    Console().print(table)


if __name__ == "__main__":
    main()
