"""docs/settings.md, written from `irq.settings.Settings`: every field's environment variable, type, default
and description. `python -m irq.settings_doc > docs/settings.md` rewrites the page; tests/test_settings_doc.py
fails when the page and `Settings` differ."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from irq.settings import Settings

COMMAND = "python -m irq.settings_doc > docs/settings.md"

HEADER = f"""# Settings

One pydantic-settings class, `irq.settings.Settings`, read once per process and passed down. Every field is
an environment variable with the `IRQ_` prefix, or a line of a `.env` file in the folder a process starts in.
A field marked *(implicit endpoint)* describes the one endpoint, `default`, of a deployment without
`IRQ_ENDPOINTS_FILE`; with a registry file, its entries say the same per endpoint
([operations.md](operations.md#endpoints-several-models-and-backends-in-one-deployment)). A description
names other settings by their field, `broker_url` for `IRQ_BROKER_URL`.

This page is generated from the class: after changing a field, run
`{COMMAND}` (tests/test_settings_doc.py fails until the page matches).

| variable | type | default | what it is |
| --- | --- | --- | --- |
"""


def type_name(annotation: Any) -> str:
    """`str`, `Path | None`, `dict[str, SecretStr]`: the annotation without module prefixes."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b[a-z_.]+\.(?=[A-Z])", "", text)


def default_text(value: Any) -> str:
    """A default as it would be written in the environment; the home folder as `~`, so the page is the same
    on every machine."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        value = str(value).replace(str(Path.home()), "~", 1)
    if value == "":
        return '`""`'
    return f"`{value}`"


def row(name: str, field: FieldInfo) -> str:
    """One line of the table; a `|` inside a cell is escaped, as the table's own are not."""
    variable = f"`{Settings.model_config.get('env_prefix', '')}{name.upper()}`"
    cells = [f"`{type_name(field.annotation)}`", default_text(field.get_default(call_default_factory=True))]
    cells = [cell.replace("|", "\\|") for cell in [*cells, field.description or ""]]
    return f"| {variable} | {' | '.join(cells)} |"


def render() -> str:
    """The whole page."""
    return HEADER + "".join(row(name, field) + "\n" for name, field in Settings.model_fields.items())


if __name__ == "__main__":
    print(render(), end="")
