"""irq as installed from its wheel, not from a checkout: what the image and a `pip install .` get must
run on their own (`irq db upgrade` finds the migrations that ship with it)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests import ROOT


def test_the_installed_wheel_upgrades_a_store_outside_the_checkout(tmp_path: Path) -> None:
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("irq-*.whl")
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    store = elsewhere / "irq.db"
    env = {**os.environ, "PYTHONPATH": str(site), "IRQ_DATABASE_URL": f"sqlite:///{store}"}
    upgrade = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]
    where = subprocess.run(
        [sys.executable, "-c", "import irq.migrate; print(irq.migrate.MIGRATIONS)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site)  # the installed copy, not the checkout's
    heads = sorted(p.name.split("_")[0] for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(heads[-1],)]
