"""A wrk measurement made up for the benchmark's report tests."""

from __future__ import annotations

from bench.load import Measurement


def measurement(
    rate: float,
    *,
    seconds: int = 10,
    non200: int = 0,
    cpu_us: float = 1000.0,
    switches: float = 0.0,
) -> Measurement:
    """``rate`` successful tokens/s for ``seconds``, ``non200`` failures besides,
    ``cpu_us`` of server CPU and ``switches`` context switches per successful token."""
    requests = int(rate * seconds) + non200
    return Measurement(
        requests=requests, seconds=float(seconds), non200=non200, socket_errors=0,
        timeouts=0, p50_ms=10.0, p90_ms=20.0, p99_ms=30.0, mean_ms=12.0, max_ms=40.0,
        first_bad="", connections=16, duration=seconds,
        cpu_seconds=cpu_us * (requests - non200) / 1e6,
        switches=round(switches * (requests - non200)),
    )
