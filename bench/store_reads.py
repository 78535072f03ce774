"""The measurements of `irq bench store` taken again on a store it filled (or any store), with the code as
it is now: every read path, the submits alone and beside back-to-back and paced reads, the API's RSS and
the bytes per job. `python -m bench.store_reads --database-url URL`. Its rollups are what those reads
cost, so a store pruned after a large run still answers as that run's rollups do."""

from __future__ import annotations

import argparse
import json

from bench.harness import machine, stack
from bench.store import measure
from irq.keys import create_key
from irq.store import reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    env = {"IRQ_RATE_LIMIT_PER_S": "0", "IRQ_MAX_INFLIGHT_JOBS": "0", "IRQ_RETENTION_DAYS": "0"}
    with stack(latency_s=0.0, slots=1, worker=False, database_url=args.database_url, env=env) as bench:
        key = create_key(bench.db, "reads", admin=True)
        result = measure(bench, key, reads.finished_count(bench.db))
    print(json.dumps({"machine": machine(), **result}, indent=2))


if __name__ == "__main__":
    main()
