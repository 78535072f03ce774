"""The read paths of `irq bench store` timed again on a store it filled (or any store), with the code as it
is now: `python -m bench.store_reads --database-url URL`. Its rollups are what those reads cost, so a store
pruned after a large run still answers as that run's rollups do."""

from __future__ import annotations

import argparse
import json

import httpx

from bench.harness import machine, stack
from bench.store import READS, _timed
from irq.keys import create_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    with stack(latency_s=0.0, slots=1, worker=False, database_url=args.database_url) as bench:
        headers = {"Authorization": f"Bearer {create_key(bench.db, 'reads', admin=True)}"}
        with httpx.Client(base_url=bench.api, headers=headers, timeout=300) as http:
            reads = {path: round(_timed(http, path), 1) for path in READS}
    print(json.dumps({"machine": machine(), "reads_ms": reads}, indent=2))


if __name__ == "__main__":
    main()
