"""`irq keys` run where there is no store (outside the checkout, with the default `./irq.db`): it says where
it looked and what to run, instead of leaving an empty `irq.db` behind and a traceback; once the store is
made there with `irq db upgrade`, the same commands work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def irq(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRQ_")}  # the defaults: ./irq.db
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_keys_where_there_is_no_store_say_what_to_run(tmp_path: Path) -> None:
    store = tmp_path / "irq.db"
    for command in (["keys", "list"], ["keys", "create", "me"], ["keys", "revoke", "me"]):
        done = irq(tmp_path, *command)
        assert done.returncode == 2, done
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert f"there is no irq store at {store}" in done.stderr and "`irq db upgrade`" in done.stderr
    assert not store.exists()  # nothing was made

    store.touch()  # an empty database file, as the commands used to leave behind
    done = irq(tmp_path, "keys", "create", "me")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the store at {store} has no irq tables" in done.stderr and "run `irq db upgrade`" in done.stderr

    assert irq(tmp_path, "db", "upgrade").returncode == 0
    created = irq(tmp_path, "keys", "create", "me")
    assert created.returncode == 0 and created.stdout.startswith("irq_"), created.stderr
    listed = irq(tmp_path, "keys", "list")
    assert listed.returncode == 0 and "\tme\t" in listed.stdout and "active" in listed.stdout
