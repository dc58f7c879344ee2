"""Simulated time, the seed's random streams, and what every generator shares.

The main window starts on Monday 2025-03-03 00:00 UTC and lasts ``days`` days; the
dormant accounts' last activity lies about four months before it. Each generator draws
from its own named stream (``Random("SEED:name")``, which hashes the string the same way
in every process), so adding a campaign never changes the benign traffic of a seed.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass

from bench.detect.emit import Recorder
from bench.detect.network import Allocator
from bench.detect.world import Human, World

__all__ = ["DAY", "HOUR", "MINUTE", "SECOND", "WINDOW_START", "Context"]

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: Monday 2025-03-03 00:00 UTC, in milliseconds.
WINDOW_START = calendar.timegm((2025, 3, 3, 0, 0, 0)) * SECOND


@dataclass
class Context:
    seed: int
    days: int
    warmup_days: int
    world: World
    alloc: Allocator
    recorder: Recorder

    @property
    def start(self) -> int:
        return WINDOW_START

    @property
    def end(self) -> int:
        return WINDOW_START + self.days * DAY

    def stream(self, *names: str) -> random.Random:
        return random.Random(":".join((str(self.seed), *names)))

    def local_midnight(self, person: Human, day: int) -> int:
        """UTC milliseconds of midnight, local time, on day ``day`` of the window."""
        return WINDOW_START + day * DAY - person.tz_minutes * MINUTE

    def local_minute(self, person: Human, time: int) -> int:
        """Minutes after local midnight at ``time``."""
        return ((time + person.tz_minutes * MINUTE) % DAY) // MINUTE
