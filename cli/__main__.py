"""`python -m cli`: the `irq` command."""

from cli.app import app

app(prog_name="irq")
