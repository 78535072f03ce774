"""The numbers of the budget rule (the package's docstring explains it)."""

from __future__ import annotations

CHARS_PER_TOKEN = 1
ARRAY_ITEMS = 5
MIN_ITEM_CHARS = 16
MIN_STRING_CHARS = 16
FORMAT_MIN_CHARS = 40
NUMBER_CHARS = 12
MAP_KEY_CHARS = 16  # what a generated map key is expected to take: llguidance cannot bound it
# The keys of an open object's room (an identifier of at most MAP_KEY_CHARS): llguidance has no
# `propertyNames`, but it generates a `patternProperties` key from its pattern.
OPEN_KEY_PATTERN = "^[A-Za-z_][A-Za-z0-9_]{0,15}$"
# The values of that room: a scalar, so that the room holds content and never nests.
OPEN_VALUE_TYPES = ["string", "number", "boolean", "null"]
FLOAT_CHARS = 24  # the longest repr of a float: -2.2250738585072014e-308
_MAX_VISITS = 200_000
