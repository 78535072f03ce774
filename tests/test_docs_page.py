"""/docs and /redoc in headless Chromium with every address but the API's own unreachable: Swagger UI and
ReDoc come from the API (fastapi-offline's copies), not from a CDN, and render every operation."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.support import Stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def dump_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran. The proxy leads nowhere and Chromium bypasses it only for
    loopback addresses, so anything the page would fetch from the internet fails."""
    done = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    return done.stdout


class _Operations(HTMLParser):
    """(method, path) of each of Swagger UI's operation blocks: `div.opblock.opblock-<method>` holding
    `span.opblock-summary-path[data-path]`."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[tuple[str, str]] = set()
        self.open: list[str | None] = []  # the method of each open element inside an operation block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        method = next((c[len("opblock-") :] for c in classes if c[len("opblock-") :] in METHODS), None)
        method = method if "opblock" in classes else None
        inside = method or next((m for m in reversed(self.open) if m), None)
        if "opblock-summary-path" in classes and inside and "data-path" in a:
            self.found.add((inside, a["data-path"]))
        if tag not in VOID:
            self.open.append(method)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self.open:
            self.open.pop()


def operations(openapi: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(m, path) for path, item in openapi["paths"].items() for m in item if m in METHODS}


def test_swagger_ui_renders_every_operation_with_no_internet(api_only: Stack, tmp_path: Path) -> None:
    page = httpx.get(api_only.api + "/docs", timeout=10)
    openapi = httpx.get(api_only.api + "/openapi.json", timeout=10).json()
    dom = dump_dom(api_only.api + "/docs", tmp_path / "chromium")

    assert page.status_code == 200 and "cdn." not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        served = httpx.get(f"{api_only.api}/docs/assets/{asset}", timeout=10)
        assert served.status_code == 200 and served.headers["cache-control"] == "public, max-age=86400"
    assert httpx.get(api_only.api + "/docs/assets/..%2Fcore.py", timeout=10).status_code == 404

    reader = _Operations()
    reader.feed(dom)
    assert ("post", "/v1/jobs") in reader.found
    assert reader.found == operations(openapi)


def test_redoc_renders_the_operations_with_no_internet(api_only: Stack, tmp_path: Path) -> None:
    page = httpx.get(api_only.api + "/redoc", timeout=10)
    dom = dump_dom(api_only.api + "/redoc", tmp_path / "chromium")

    assert page.status_code == 200 and "cdn." not in page.text and "fonts.googleapis" not in page.text
    assert "/v1/batches/{batch_id}/results" in dom  # drawn by redoc.standalone.js from /openapi.json
