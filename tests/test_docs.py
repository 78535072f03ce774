"""The docs hold together: a short README that points on; no link or path in README.md, docs/ or a scripts/
README leaves the repository or names a file that is not there, nor does a docs page the code names; and the
job record's table on docs/api.md lists every field of a job."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel

from api.schemas import JobView

SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "scripts").rglob("README.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
UP = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-][\w./-]*)")
# A path from the repository's root, as prose and code spans name them (`docs/gpu.md`, irq/jobs.py).
TOP = (
    "api",
    "bench",
    "deploy",
    "docs",
    "examples",
    "inference",
    "irq",
    "migrations",
    "scripts",
    "tests",
    "worker",
)
ROOTED = re.compile(rf"(?<![\w./-])((?:{'|'.join(TOP)})/[\w./-]*[\w/])")
PLACEHOLDER = re.compile(r"[…*<>{}]|\.\.\.|/NAME|/PATH")


def inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def outward(page: Path, root: Path = ROOT) -> list[str]:
    """The `../` paths of a page that lead out of the repository: a link's from the page's folder, a path
    in prose from the checkout's root (where a reader's shell is when they run the commands around it)."""
    text = page.read_text()
    links = [t for t in LINK.findall(text) if t.startswith("../") and not inside(page.parent / t, root)]
    prose = [t for t in UP.findall(LINK.sub("]()", text)) if not inside(root / t, root)]
    return links + prose


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The page's relative links whose file is not in the repository (anchors and web addresses aside)."""
    broken = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#", 1)[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue
        if not inside(page.parent / path, root) or not (page.parent / path).exists():
            broken.append(target)
    return broken


def missing_paths(page: Path, root: Path = ROOT) -> list[str]:
    """The repository paths a page names in its text that are not there."""
    text = page.read_text()
    named = {p.rstrip(".") for p in ROOTED.findall(text) if not PLACEHOLDER.search(p)}
    return sorted(p for p in named if not (root / p).exists())


def test_the_readme_is_short_and_its_two_commands_are_there() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200, "the README points on to docs/ rather than holding it"
    for command in ("./scripts/dev", "./scripts/test"):
        assert f"\n{command} " in readme and os.access(ROOT / command, os.X_OK)


def test_no_page_points_outside_the_repository() -> None:
    assert {str(p.relative_to(ROOT)): o for p in PAGES if (o := outward(p))} == {}


def test_every_link_of_a_page_leads_to_a_file_of_the_repository() -> None:
    assert {str(p.relative_to(ROOT)): b for p in PAGES if (b := broken_links(p))} == {}


def test_every_repository_path_a_page_names_is_there() -> None:
    assert {str(p.relative_to(ROOT)): m for p in PAGES if (m := missing_paths(p))} == {}


def code_files() -> list[Path]:
    """The repository's Python and shell scripts, its data aside, and this test aside (it names a missing page
    on purpose)."""
    folders = [ROOT / folder for folder in (*TOP, ".ci") if folder != "docs"]
    found = [
        p for folder in folders for p in folder.rglob("*") if p.is_file() and p.suffix in (".py", ".sh", "")
    ]
    return [p for p in found if "data" not in p.relative_to(ROOT).parts and p != SELF]


def test_every_page_the_code_points_at_is_there() -> None:
    """Docstrings and comments name docs pages (`docs/benchmarks.md`) for their figures."""
    named = {
        (str(path.relative_to(ROOT)), page)
        for path in code_files()
        for page in re.findall(r"docs/[\w./-]*\.md", path.read_text(errors="replace"))
    }
    assert {(where, page) for where, page in named if not (ROOT / page).exists()} == set()


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# API")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[gone](gone.md) [up](../../elsewhere/x.md) `docs/nothing.md` [ok](api.md#keys) docs/api.md"
    )
    assert broken_links(page, tmp_path) == ["gone.md", "../../elsewhere/x.md"]
    assert outward(page, tmp_path) == ["../../elsewhere/x.md"]
    assert missing_paths(page, tmp_path) == ["docs/nothing.md"]
    page.write_text("DATA (default `../shared/data`); [gpu](../docs/api.md)")
    assert outward(page, tmp_path) == ["../shared/data"]


def fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """A model's field names, a nested model's as `outer.inner` beside `outer`."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(prefix + name)
        nested = [
            a for a in getattr(field.annotation, "__args__", (field.annotation,)) if isinstance(a, type)
        ]
        for inner in nested:
            if issubclass(inner, BaseModel):
                names |= fields(inner, f"{prefix}{name}.")
    return names


def test_the_job_record_table_lists_every_field_of_a_job() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text.split("## A job's record", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in table.splitlines() if row.startswith("| `") for name in
                  re.findall(r"`([\w.]+)`", row.split("|")[1])}  # fmt: skip
    assert documented == fields(JobView)
