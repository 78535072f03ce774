"""CPU per broker call with kombu's Redis transport as it ships and with irq's (`irq.broker.Transport`:
one Redis client per channel instead of one per command): publishing a message (what a submit and every
task event do), then getting and acknowledging it (what a worker's consumer does with each message).

    python -m bench.broker_calls [--calls 2000] [--rounds 3]

A `redis-server` of its own; the two transports alternate, `--rounds` times each, in this process;
CPU from `time.process_time()`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer
from kombu.transport import redis as kombu_redis
from rich.console import Console
from rich.table import Table

from cli.procs import free_port
from cli.stack import start_embedded_redis
from irq.broker import Transport

QUEUE = Queue("bench-broker-calls", Exchange("bench-broker-calls"), routing_key="bench")


def measure(url: str, transport: type[kombu_redis.Transport], n: int) -> tuple[float, float]:
    """Milliseconds of CPU per publish and per get + ack."""
    with Connection(url, transport=transport) as conn:
        channel = conn.channel()
        queue = QUEUE(channel)
        queue.declare()
        producer = Producer(channel, exchange=queue.exchange, routing_key="bench")
        start = time.process_time()
        for i in range(n):
            producer.publish({"job": i})
        publish = time.process_time() - start
        start = time.process_time()
        for _ in range(n):
            message = queue.get(no_ack=False)
            assert message is not None
            message.ack()
        consume = time.process_time() - start
    return publish / n * 1000, consume / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis_proc = start_embedded_redis(url)
    transports = {"kombu as shipped": kombu_redis.Transport, "irq": Transport}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in transports}
    try:
        for _ in range(args.rounds):
            for name, transport in transports.items():
                runs[name].append(measure(url, transport, args.calls))
    finally:
        redis_proc.terminate()
        redis_proc.wait()
    table = Table(title=f"CPU ms per call, median of {args.rounds} runs of {args.calls} (min–max)")
    for column in ("transport", "publish", "get + ack"):
        table.add_column(column)
    for name, values in runs.items():
        cells = []
        for part in (0, 1):
            xs = [v[part] for v in values]
            cells.append(f"{statistics.median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})")
        table.add_row(name, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
