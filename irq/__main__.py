from irq.cli import app

app(prog_name="irq")
