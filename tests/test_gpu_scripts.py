"""Every GPU-host script, `scripts/gpu/run-*.sh`, runs on today's code: a dry run of each on the CPU.

A dry run is the script itself with the simulated engine (`ENGINE=simulated`: no vLLM, no model, no GPU) and
a small `N`, in a copy of the working tree as it travels to the GPU host (tracked and untracked files, not the
ignored ones), with `.data` built by `scripts/gpu/build-carry.sh` from a few prompts and schemas, the carried
wheel sets (`scripts/gpu/pins.txt`) standing in as empty files in `.whl`/`.fi` with their
`NAME-VERSION.dist-info` already in `SITE` (so `install_carried` must skip them all), and this interpreter's
folder first on `PATH` as `python3`. The legs that need vLLM (`run-paths.sh`'s offline and server) are
skipped by the scripts themselves. A script that cannot dry-run exits with `NO_DRY_RUN` under
`ENGINE=simulated` after printing why; every other outcome but success fails its case.

The scripts listen on fixed ports and keep state under fixed `/tmp` paths, as the GPU host, a machine of
their own, allows; so where `unshare` can, each runs in a network namespace of its own (only its loopback)
with a private `/tmp`, and cannot meet another run on this machine, and in a process namespace of its own,
so that what it leaves running (the engines a script starts in a session of their own to outlive one call)
ends with it, also when its case times out; elsewhere it runs on the machine's loopback, and its case fails
up front where one of those ports is taken.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"
SCRIPTS = sorted(p.name for p in GPU.glob("run-*.sh"))
NO_DRY_RUN = 77  # a script's exit status for "no dry run on a CPU machine", as automake's tests skip
RUN_S = 300  # a dry run takes about a minute on a busy 2-core machine; this is the bound of a hung one
PROMPTS = [
    "Write a function that checks whether a string is a palindrome.",
    "Create a function that returns the n-th Fibonacci number iteratively.",
    "Write a function that merges two sorted lists into one sorted list.",
    "Create a function that counts the words in a text.",
]
# The ports the scripts listen on (Redis, irq's API, services, vLLM's server): without a namespace of its
# own, a dry run would meet whatever else listens there (another run's service answering its /health).
FIXED_PORTS = (6399, 8000, 8001, 8101, 8102, 8201)
# The dry run's knobs, small enough for a CPU machine; each script reads those it has.
DRY_RUN = {"ENGINE": "simulated", "N": "8", "CONCURRENCY": "4", "PROCS": "1", "LIMIT": "3", "REPEAT": "1"}


def pinned(section: str) -> list[tuple[str, str]]:
    """The `name==version` pins of one set of scripts/gpu/pins.txt."""
    pins, current = [], ""
    for line in (GPU / "pins.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif line and current == section:
            name, version = line.split("==")
            pins.append((name, version))
    return pins


def wheel_name(name: str) -> str:
    """A distribution's name as wheel files and dist-info folders spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


@cache
def isolation() -> list[str]:
    """The `unshare` command that gives a dry run its own network, mounts and processes (all of them killed
    when it ends), or [] where none can (or where the checkout or its Python lie under the /tmp it would
    hide)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    if any(Path(p).resolve().is_relative_to("/tmp") for p in (ROOT, sys.prefix, sys.base_prefix)):
        return []
    own = ["--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
    for command in (["unshare", *own], ["unshare", "--map-root-user", *own]):
        probe = subprocess.run([*command, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return command
    return []


def free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def prepare(root: Path) -> tuple[Path, Path, Path]:
    """Under `root`: `checkout`, the working tree as it travels (with `.data`, and the carried sets as
    stand-ins), `site` holding those sets' dist-info folders, and an empty `out`."""
    checkout, site, out, data = root / "checkout", root / "site", root / "out", root / "data"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    (data / "jsonschemabench").mkdir(parents=True)
    (data / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    for schema in (ROOT / "tests" / "data" / "jsonschemabench").glob("*.json"):
        shutil.copy(schema, data / "jsonschemabench")
    subprocess.run(
        ["bash", "scripts/gpu/build-carry.sh", "--data", str(data), "--target", str(checkout), "data"],
        cwd=checkout, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for folder, section in ((".whl", "whl"), (".fi", "fi")):
        (checkout / folder).mkdir()
        for name, version in pinned(section):
            (checkout / folder / f"{wheel_name(name)}-{version}-py3-none-any.whl").touch()
            info = site / f"{wheel_name(name)}-{version}.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    out.mkdir()
    return checkout, site, out


def dry_run(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`bash scripts/gpu/SCRIPT` as a dry run in the tree prepared under `root`; isolated where possible, with
    `root` as its `/tmp`."""
    checkout, site, out = prepare(root)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("IRQ_", "VLLM_"))}
    env |= DRY_RUN | {"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    unshare = isolation()
    if unshare:  # `root` is /tmp in there
        env |= {"TMPDIR": "/tmp", "OUT": "/tmp/out", "SITE": "/tmp/site"}
        command = [
            *unshare, "bash", "-c",
            f'ip link set lo up && mount --bind "{root}" /tmp && cd /tmp/checkout && exec bash "$0"',
            f"scripts/gpu/{script}",
        ]  # fmt: skip
    else:
        busy = [port for port in FIXED_PORTS if not free(port)]
        assert not busy, f"no unshare here, and ports the scripts listen on are taken: {busy}"
        env |= {"TMPDIR": str(root), "OUT": str(out), "SITE": str(site)}
        command = ["bash", f"scripts/gpu/{script}"]
    return subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, timeout=RUN_S, start_new_session=True
    )


def test_every_gpu_script_is_found() -> None:
    assert {"run-schemas.sh", "run-paths.sh", "run-replicas.sh", "run-compare.sh"} <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_gpu_script_runs_to_its_results_on_the_cpu_with_the_simulated_engine(
    script: str, tmp_path: Path
) -> None:
    done = dry_run(script, tmp_path)
    said = done.stdout + done.stderr
    if done.returncode == NO_DRY_RUN:
        pytest.skip(f"{script} has no dry run: {said.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{said[-6000:]}"
    out = tmp_path / "out"
    results = sorted(out.glob("*.json"))
    assert results, f"{script} wrote no results: {sorted(p.name for p in out.iterdir())}\n{said[-3000:]}"
    for result in results:
        json.loads(result.read_text())  # a result file is whole
    logs = [said, *(p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".log", ".md"))]
    for text in logs:
        assert "Traceback" not in text and "model_mismatch" not in text, text[-6000:]
    assert "installing" not in said  # every carried wheel was already in SITE: none installed again
