"""Gas detection alarms (GB/T 50493-2019): setpoint limits and the order of simultaneous alarms.

Limits (a configuration may be stricter, never looser):
- combustible gas, in %LEL: level 1 at most 25 %LEL, level 2 at most 50 %LEL;
- toxic gas, in ppm: level 1 at most 100 % of the OEL, level 2 at most 200 % of the OEL; only where
  the detector's range cannot reach that (declared `range_limited`), level 1 at most 5 % of the IDLH
  and level 2 at most 10 % of the IDLH.

Among simultaneous gas alarms, level 2 comes before level 1, and at the same level toxic before
combustible (`gas_order_key`, `order_gas_alarms`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

COMBUSTIBLE_LEVEL1_MAX = 25.0  # %LEL
COMBUSTIBLE_LEVEL2_MAX = 50.0  # %LEL
TOXIC_LEVEL1_MAX_OEL = 1.0  # fraction of OEL
TOXIC_LEVEL2_MAX_OEL = 2.0
TOXIC_LEVEL1_MAX_IDLH = 0.05  # fraction of IDLH, range-limited detectors only
TOXIC_LEVEL2_MAX_IDLH = 0.10
CITATION = "GB/T 50493-2019"
GAS_TYPES = ("combustible", "toxic")
UNITS = {"combustible": "%LEL", "toxic": "ppm"}

# Occupational exposure limits (GBZ 2.1) are published in mg/m³; the channels compare in ppm.
OEL_KINDS = ("MAC", "PC-STEL", "PC-TWA")
OEL_UNITS = ("ppm", "mg/m3")  # mg/m³ is accepted as a spelling of mg/m3
MOLAR_VOLUME = 24.45  # L/mol at 25 °C and 101.325 kPa

# Our own bounds on a gas channel's timing and deadband (docs/rules.md, "Gas detection"). A detector
# already takes up to 30 s (combustible) or 60 s (toxic) to reach 90 % of a step (T90); an on-delay on
# top of that holds back an evacuation alarm, so a long one is refused and a noticeable one is flagged.
ON_DELAY_MAX = 30.0  # s: refused above
ON_DELAY_WARN = 10.0  # s: a warning above
DEADBAND_WARN_SHARE = 0.5  # of level 1: a warning above (at or above level 1 itself is refused)


def mg_per_m3_to_ppm(concentration: float, molar_mass: float) -> float:
    """ppm = mg/m³ × Vm / M at 25 °C and 101.325 kPa (H2S, M 34.08: 10 mg/m³ ≈ 7.2 ppm)."""
    return concentration * MOLAR_VOLUME / molar_mass


def behaviour_problems(level1: float, deadband: float, on_delay: float) -> tuple[list[tuple[str, str]],
                                                                                list[tuple[str, str]]]:
    """(refusals, warnings) as (key, message) for a channel's deadband and on-delay."""
    refusals: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    if deadband >= level1:
        refusals.append(("deadband", f"a deadband of {deadband:g} is not below level 1 ({level1:g}): the level 1 "
                                     f"alarm could never return (return needs a reading below {level1 - deadband:g})"))
    elif deadband > DEADBAND_WARN_SHARE * level1:
        warnings.append(("deadband", f"a deadband of {deadband:g} is more than {DEADBAND_WARN_SHARE:.0%} of level 1 "
                                     f"({level1:g}): the alarm returns only below {level1 - deadband:g}"))
    if on_delay > ON_DELAY_MAX:
        refusals.append(("on_delay", f"an on-delay of {on_delay:g} s holds a gas alarm back too long: at most "
                                     f"{ON_DELAY_MAX:g} s (on top of the detector's own response time)"))
    elif on_delay > ON_DELAY_WARN:
        warnings.append(("on_delay", f"an on-delay of {on_delay:g} s is long for a gas alarm (above "
                                     f"{ON_DELAY_WARN:g} s); the detector's response time comes on top of it"))
    return refusals, warnings


def setpoint_problems(gas_type: str, level1: float, level2: float, oel: float | None, idlh: float | None,
                      range_limited: bool) -> list[tuple[str, str]]:
    """(key, message) for every setpoint that breaks the standard's limits; empty when all is well."""
    problems: list[tuple[str, str]] = []
    if not level1 < level2:
        problems.append(("level2", f"level 2 ({level2:g}) must be above level 1 ({level1:g})"))
    if gas_type == "combustible":
        if level1 > COMBUSTIBLE_LEVEL1_MAX:
            problems.append(("level1", f"combustible level 1 at {level1:g} %LEL is above the {CITATION} limit "
                                       f"of {COMBUSTIBLE_LEVEL1_MAX:g} %LEL"))
        if level2 > COMBUSTIBLE_LEVEL2_MAX:
            problems.append(("level2", f"combustible level 2 at {level2:g} %LEL is above the {CITATION} limit "
                                       f"of {COMBUSTIBLE_LEVEL2_MAX:g} %LEL"))
        return problems
    if range_limited:
        if idlh is None:
            problems.append(("idlh", f"a range-limited toxic channel needs its IDLH in ppm ({CITATION} limits it "
                                     f"to 5 %/10 % IDLH)"))
            return problems
        for key, value, fraction, name in (("level1", level1, TOXIC_LEVEL1_MAX_IDLH, "level 1"),
                                           ("level2", level2, TOXIC_LEVEL2_MAX_IDLH, "level 2")):
            limit = fraction * idlh
            if value > limit:
                problems.append((key, f"toxic {name} at {value:g} ppm is above the {CITATION} limit for a "
                                      f"range-limited detector of {fraction * 100:g} % IDLH = {limit:g} ppm"))
        return problems
    if oel is None:
        problems.append(("oel", f"a toxic channel needs its OEL in ppm ({CITATION} limits level 1 to 100 % OEL "
                                f"and level 2 to 200 % OEL)"))
        return problems
    for key, value, fraction, name in (("level1", level1, TOXIC_LEVEL1_MAX_OEL, "level 1"),
                                       ("level2", level2, TOXIC_LEVEL2_MAX_OEL, "level 2")):
        limit = fraction * oel
        if value > limit:
            problems.append((key, f"toxic {name} at {value:g} ppm is above the {CITATION} limit of "
                                  f"{fraction * 100:g} % OEL = {limit:g} ppm"))
    return problems


def gas_order_key(level: int, toxic: bool) -> tuple[int, int]:
    """Sort key: level 2 first, then toxic before combustible."""
    return (-level, 0 if toxic else 1)


T = TypeVar("T")


def order_gas_alarms(alarms: Iterable[T], level_of: Any = None, toxic_of: Any = None) -> list[T]:
    """Order active gas alarms for display and annunciation (stable for equal keys).

    Items are dicts with `level` and `toxic` (or `type`) unless accessor functions are given.
    """
    level_of = level_of or (lambda item: item["level"])
    toxic_of = toxic_of or (lambda item: item.get("toxic", item.get("type") == "toxic"))
    return sorted(alarms, key=lambda item: gas_order_key(int(level_of(item)), bool(toxic_of(item))))
