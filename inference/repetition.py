"""Degenerate output: a generation caught in a loop, the same few tokens over and over.

A small model under a grammar often writes one phrase or one array item again and again until `max_tokens`
cut it: the document cannot close, and every token after the loop began is GPU time spent on nothing. The
engines stop such a generation as soon as its last tokens repeat one unit of at most `MAX_PERIOD` tokens at
least `MIN_REPEATS` times, over at least `MIN_SPAN` tokens, and end it with finish reason `repetition`; the
service answers it as a cut document (`output_truncated`), which the retry policy runs again under the
bounded schema. That bounded attempt asks for no such stop (`GenerateRequest.stop_loops`): its document
closes within the budget whatever the tokens, and a loop stopped there would fail the job for good. A
matrix of zeros or a list of one repeated value of 32 tokens and more is stopped too: no useful document
is made of such runs.
"""

from __future__ import annotations

from collections.abc import Sequence

REPETITION = "repetition"  # the finish reason of a generation stopped in a loop
MAX_PERIOD = 32  # the longest unit, in tokens, that counts as repeated
MIN_REPEATS = 8
MIN_SPAN = 48  # short units must repeat over at least this many tokens (a 2-token unit: 24 times)
CHECK_EVERY = 16  # tokens between two checks of one generation


def looping(tokens: Sequence[int]) -> bool:
    """Whether `tokens` end in a unit of 1 … MAX_PERIOD tokens repeated MIN_REPEATS times, over MIN_SPAN
    tokens at least."""
    n = len(tokens)
    if n < MIN_SPAN:
        return False
    last = tokens[-1]
    # Cheap first: only a period whose last token comes back one period earlier can be a loop.
    candidates = [p for p in range(1, min(MAX_PERIOD, n - 1) + 1) if tokens[n - 1 - p] == last]
    for period in candidates:
        span = max(period * MIN_REPEATS, MIN_SPAN)
        if span > n:
            break
        tail = tokens[n - span :]
        if tail[period:] == tail[:-period]:
            return True
    return False


class LoopWatch:
    """Watches one generation's tokens as they come, checking every CHECK_EVERY of them."""

    def __init__(self) -> None:
        self._checked = 0

    def stuck(self, tokens: Sequence[int]) -> bool:
        if len(tokens) - self._checked < CHECK_EVERY:
            return False
        self._checked = len(tokens)
        return looping(tokens)
