"""docs/settings.md is the page `python -m irq.settings_doc` writes from `irq.settings.Settings`: every field,
with its environment variable, type, default and description, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from irq.settings import Settings
from irq.settings_doc import COMMAND, default_text, render, type_name

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_the_settings_page_is_what_the_generator_writes() -> None:
    assert PAGE.read_text() == render(), f"docs/settings.md is out of step with Settings: run `{COMMAND}`"


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_the_page_has_a_row_for_every_setting_under_its_environment_variable() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `IRQ_")]
    assert [row.split("`")[1] for row in rows] == [f"IRQ_{name.upper()}" for name in Settings.model_fields]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "none"),
        (True, "`true`"),
        ("", '`""`'),
        (Path.home() / ".cache" / "irq", "`~/.cache/irq`"),
        (8000, "`8000`"),
    ],
)
def test_a_default_reads_as_it_would_be_set_and_the_same_on_every_machine(value: object, text: str) -> None:
    assert default_text(value) == text


def test_a_type_reads_without_its_module() -> None:
    assert type_name(Settings.model_fields["endpoints_file"].annotation) == "Path | None"
    assert type_name(Settings.model_fields["inference_headers"].annotation) == "dict[str, SecretStr]"
