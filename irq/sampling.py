"""The sampling ranges every engine accepts: a job request is held to them at submit
(`irq/submission/rules.py`), a generation request at the inference service (`inference/protocol.py`)."""

from __future__ import annotations

TEMPERATURE_MIN = 0.0
TEMPERATURE_MAX = 2.0
TOP_P_MIN = 0.0  # exclusive: top_p must be above it
TOP_P_MAX = 1.0
