"""irq's tests: `unit/` starts no process; the modules beside it run real ones, in the checkout (`ROOT`)."""

from pathlib import Path

ROOT = (
    Path(__file__).resolve().parents[1]
)  # the checkout: `python -m tests.…` finds the tests' own modules here
