"""What a run used, and what that costs.

A run's resources are one small JSON object recorded once per run
(``Run.ResourcesRecorded``): ``cpu_seconds`` (user + system time of the whole
process tree), ``peak_rss_bytes``, ``wall_seconds``, ``gpu_seconds`` and
``peak_gpu_memory_bytes`` when CUDA was used, and the ``host`` and ``backend``
it ran on. Every key is optional; a missing figure counts as zero.

Cost is exact decimal arithmetic on the recorded figures, so a test (or an
auditor) can recompute it to the last digit from the rates::

    cost = cpu_seconds / 3600 * cpu_hour
         + gpu_seconds / 3600 * gpu_hour
         + peak_rss_bytes / 1e9 * wall_seconds / 3600 * gb_hour

Each recorded number enters as the decimal it reads as in JSON (``Decimal(str(x))``,
so ``0.1`` is exactly one tenth); the one division by 3600 (and by 1e9) is carried
to 28 significant digits. Memory is charged as GB-hours: the run's peak resident
memory (1 GB = 10**9 bytes) held for its whole wall time. Amounts are rounded
once, half to even, to :data:`AMOUNT_PLACES` decimal places, when they are shown:
a total over many runs is the rounded sum of their exact costs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from domain.errors import InvalidPayload, RuleViolated

NUMBER_KEYS = ("cpu_seconds", "peak_rss_bytes", "wall_seconds", "gpu_seconds", "peak_gpu_memory_bytes")
BYTE_KEYS = ("peak_rss_bytes", "peak_gpu_memory_bytes")
TEXT_KEYS = ("host", "backend")
RESOURCE_KEYS = (*NUMBER_KEYS, *TEXT_KEYS)
TEXT_MAX = 200
NUMBER_MAX = 2**53
"""Larger figures are not exact in JSON numbers (and no run uses 2**53 seconds or bytes)."""
AMOUNT_PLACES = 6
SECONDS_PER_HOUR = Decimal(3600)
BYTES_PER_GB = Decimal(10**9)
_EXACT = Context(prec=28)
_AMOUNT = Decimal(1).scaleb(-AMOUNT_PLACES)


class InvalidResources(InvalidPayload):
    """Resources with an unknown key, a figure that is not a finite non-negative number, or an overlong text."""

    names_a_case = True


class ResourcesAlreadyRecorded(RuleViolated):
    """A run's resources are recorded once; a second report is refused."""

    names_a_case = True


def check_resources(resources: Any) -> dict[str, Any]:
    """The resources, checked: known keys only, figures finite and non-negative, byte counts
    whole numbers, texts of 1 to :data:`TEXT_MAX` characters. Raises :class:`InvalidResources`."""
    if not isinstance(resources, Mapping) or not resources:
        raise InvalidResources("resources must be a non-empty object", field="resources")
    checked: dict[str, Any] = {}
    for key in sorted(resources):
        value = resources[key]
        field = f"resources.{key}"
        if key not in RESOURCE_KEYS:
            raise InvalidResources(f"unknown resource {key!r} (known: {', '.join(RESOURCE_KEYS)})", field="resources")
        if key in TEXT_KEYS:
            if not isinstance(value, str) or not value or len(value) > TEXT_MAX:
                raise InvalidResources(f"{key} must be 1 to {TEXT_MAX} characters", field=field)
            checked[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidResources(f"{key} must be a finite number", field=field)
        if not 0 <= value <= NUMBER_MAX:
            raise InvalidResources(f"{key} must be between 0 and 2**53", field=field)
        if key in BYTE_KEYS:
            if value != int(value):
                raise InvalidResources(f"{key} must be a whole number of bytes", field=field)
            value = int(value)
        checked[key] = value
    return checked


@dataclass(frozen=True)
class Rates:
    """What an hour of each resource costs, in ``currency``: a CPU core, a GPU, a GB of memory."""

    cpu_hour: Decimal
    gpu_hour: Decimal
    gb_hour: Decimal
    currency: str = "USD"

    def to_json(self) -> dict[str, str]:
        """The rates as JSON (amounts as decimal strings, never binary floats)."""
        return {
            "cpu_hour": str(self.cpu_hour),
            "gpu_hour": str(self.gpu_hour),
            "gb_hour": str(self.gb_hour),
            "currency": self.currency,
        }


def _figure(resources: Mapping[str, Any], key: str) -> Decimal:
    """A recorded figure as the decimal its JSON text reads as (zero when absent)."""
    value = resources.get(key)
    if value is None or isinstance(value, bool):
        return Decimal(0)
    return Decimal(str(value))


def gb_hours(resources: Mapping[str, Any]) -> Decimal:
    """Peak resident memory in GB (10**9 bytes) held for the wall time, in hours."""
    memory = _EXACT.divide(_figure(resources, "peak_rss_bytes"), BYTES_PER_GB)
    return _EXACT.multiply(memory, _EXACT.divide(_figure(resources, "wall_seconds"), SECONDS_PER_HOUR))


def cost(resources: Mapping[str, Any], rates: Rates) -> Decimal:
    """The exact cost of one run's ``resources`` at ``rates`` (see the module's formula); not rounded."""
    cpu = _EXACT.multiply(_EXACT.divide(_figure(resources, "cpu_seconds"), SECONDS_PER_HOUR), rates.cpu_hour)
    gpu = _EXACT.multiply(_EXACT.divide(_figure(resources, "gpu_seconds"), SECONDS_PER_HOUR), rates.gpu_hour)
    memory = _EXACT.multiply(gb_hours(resources), rates.gb_hour)
    return _EXACT.add(_EXACT.add(cpu, gpu), memory)


def amount(value: Decimal) -> Decimal:
    """An amount rounded, half to even, to :data:`AMOUNT_PLACES` decimal places: the one rounding."""
    return value.quantize(_AMOUNT, rounding=ROUND_HALF_EVEN, context=Context(prec=60))


def total_cost(runs: Iterable[Mapping[str, Any]], rates: Rates) -> Decimal:
    """The exact sum of the runs' costs (round it once, with :func:`amount`, to show it)."""
    total = Decimal(0)
    for resources in runs:
        total = _EXACT.add(total, cost(resources, rates))
    return total


def priced(resources: Mapping[str, Any], rates: Rates) -> dict[str, str]:
    """``{"amount": "<decimal>", "currency": ...}``: one run's cost as the API and pages show it."""
    return {"amount": str(amount(cost(resources, rates))), "currency": rates.currency}
