"""`/dashboard` in headless Chromium: the page fetches its data and plotly.js draws the latency histogram
and the success rate over time from the jobs the store holds; with no jobs it says so."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.support import Stack, start_fault_service, start_stack, stop_stack, write_registry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKUP_MODEL = "<b>bold</b>"  # a client's model name, which the page must show as text, not markup
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Page:
    """What the rendered DOM holds: the plots' SVG paths by plot and trace, their tick labels by plot and
    axis ("ytick", "y2tick"), and the text by element id."""

    paths: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    ticks: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    text: dict[str, str] = field(default_factory=lambda: defaultdict(str))
    plots: set[str] = field(default_factory=set)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self.open: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "js-plotly-plot" in a.get("class", "").split():
            self.page.plots.add(a["id"])
        if tag == "path" and "d" in a:
            plot = next((e["id"] for e in reversed(self.open) if e.get("id") in self.page.plots), None)
            classes = (e.get("class", "") for e in reversed(self.open))
            trace = next((c for c in classes if c.startswith("trace ")), "")
            if plot and trace:  # keyed by plot and trace kind, then the path's own class (markers: "point")
                kind = ".".join([trace.split()[1], *a.get("class", "").split()[:1]])
                self.page.paths[(plot, kind)].append(a["d"])
        if tag not in VOID:
            self.open.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        classes = [c for e in self.open for c in e.get("class", "").split()]
        plot = next((e["id"] for e in reversed(self.open) if e.get("id") in self.page.plots), None)
        tick = next((c for c in classes if c in ("ytick", "y2tick")), None)
        if plot and tick:
            self.page.ticks[(plot, tick)].append(data)
        for element in self.open:
            if "id" in element:
                self.page.text[element["id"]] += data


def render(url: str, profile: Path) -> Page:
    """The page's DOM after its scripts ran, as headless Chromium serializes it."""
    done = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    reader = _Reader()
    reader.feed(done.stdout)
    return reader.page


def bar_heights(paths: list[str]) -> list[float]:
    """Heights of plotly's bars, drawn as `M x,base V top H x2 V base Z`."""
    heights = []
    for d in paths:
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
        heights.append(abs(numbers[1] - numbers[2]))
    return heights


def _submit(stack: Stack, bodies: list[dict[str, str]]) -> list[dict]:  # type: ignore[type-arg]
    with stack.client() as http:
        ids = [http.post("/v1/jobs", json=body).json()["id"] for body in bodies]
        return [stack.wait_for(http, job_id, 60) for job_id in ids]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_dashboard_plots_latency_and_success_rate_from_the_store(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    markup = start_fault_service(tmp_path, env={"IRQ_SERVED_MODEL": MARKUP_MODEL}, name="markup")
    registry = write_registry(
        tmp_path / "endpoints.toml",
        dict(name="plain", url=inference.url, model="SmolLM2-135M-Instruct"),
        dict(name="markup", url=markup.url, model=MARKUP_MODEL),
    )
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env={"IRQ_ENDPOINTS_FILE": str(registry)})
    stack.start_worker()
    try:
        page_url = f"{stack.api}/dashboard#key={stack.key}"  # the fragment is never sent to the server
        empty = render(page_url, tmp_path / "chromium")
        jobs = _submit(
            stack,
            [{"prompt": f"A function that returns {i}"} for i in range(4)]
            + [{"prompt": f"[faults: 400] refused {i}"} for i in range(2)]
            + [{"prompt": "A function that returns 5", "model": MARKUP_MODEL}],
        )
        url, window = stack.api + "/dashboard/data", {"window": 900}
        data = httpx.get(url, params=window, headers={"Authorization": f"Bearer {stack.key}"}).json()
        others = httpx.get(url, params=window, headers={"Authorization": f"Bearer {stack.other_key}"}).json()
        anonymous = httpx.get(url, params=window)
        page = render(page_url, tmp_path / "chromium")
    finally:
        stop_stack(stack)
        inference.service.stop()
        markup.service.stop()

    assert {"latency", "success"} <= empty.plots
    assert "no job succeeded in this window" in empty.text["latency"]
    assert "no job finished in this window" in empty.text["success"]
    assert "0 finished" in empty.text["summary"]

    # The data the page plots: what the store holds about these jobs, and nothing of their prompts.
    assert [job["status"] for job in jobs] == ["succeeded"] * 4 + ["failed"] * 2 + ["succeeded"]
    assert data["finished"] == {"succeeded": 5, "failed": 2}
    assert others["finished"] == {} and others["latency"] == []  # another key sees none of these jobs
    assert anonymous.status_code == 401
    groups = {group["model"]: group for group in data["latency"]}
    default = groups[jobs[0]["model"]]
    assert (default["endpoint"], default["backend"]) == ("plain", "guidance")
    assert sorted(default["total_ms"]) == pytest.approx(
        sorted(job["timings"]["total_ms"] for job in jobs[:4])
    )
    assert groups[MARKUP_MODEL]["total_ms"] == pytest.approx([jobs[-1]["timings"]["total_ms"]])
    timeline = data["timeline"]
    assert (sum(timeline["succeeded"]), sum(timeline["failed"]), sum(timeline["cancelled"])) == (5, 2, 0)
    assert len(timeline["starts"]) <= 60 and timeline["bucket_s"] * len(timeline["starts"]) >= 900
    assert "refused" not in str(data)

    # What Chromium drew from it.
    assert {"latency", "success"} <= page.plots
    summary = "7 finished: 5 succeeded, 2 failed, 0 cancelled · 71.4 % succeeded"
    assert page.text["summary"].startswith(summary)
    assert "could not load" not in page.text["status"]
    assert f"markup: {MARKUP_MODEL} · guidance" in page.text["latency"]  # the legend, tags shown as typed
    histogram = bar_heights(page.paths[("latency", "bars")])
    assert sum(h > 0 for h in histogram) >= 1
    busy_buckets = sum(1 for s, f in zip(timeline["succeeded"], timeline["failed"], strict=True) if s + f)
    assert sum(h > 0 for h in bar_heights(page.paths[("success", "bars")])) == busy_buckets
    assert len(page.paths[("success", "scatter.point")]) == busy_buckets  # a marker where jobs finished
    # Counts of jobs are whole numbers, however few: no tick at 0.5 or 2.41 jobs.
    for plot, axis in (("latency", "ytick"), ("success", "y2tick")):
        labels = page.ticks[(plot, axis)]
        assert labels and all(label.isdigit() for label in labels), (plot, axis, labels)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_dashboard_tells_a_wrong_key_from_a_missing_one(api_only: Stack, tmp_path: Path) -> None:
    missing = render(f"{api_only.api}/dashboard", tmp_path / "missing")
    wrong = render(f"{api_only.api}/dashboard#key=irq_not-a-key", tmp_path / "wrong")
    assert missing.text["status"] == "could not load the data: an API key is needed"
    assert wrong.text["status"] == (
        "could not load the data: this API key is not valid (unknown or revoked): enter another"
    )
