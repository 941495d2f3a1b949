"""What a gas channel's registers mean, as a pure function of their values and qualities.

Precedence of a channel's quality, most telling first:
1. a bad quality of any register the channel needs (comm failure, exception, garbage): that one;
2. where the profile reads the detector's unit: a unit that is not the channel's configured one, or
   a unit code naming no unit or several: DEVICE_ERROR (the number is not what the tag says it is);
3. the channel's fault condition: SENSOR_FAULT, with the fault code;
4. inhibit, calibration or bump test: MAINTENANCE (the reading is not the plant's gas, and the
   panel's alarms are usually held, but nothing is wrong);
5. a concentration that decoded to NaN or infinity: OUT_OF_RANGE;
6. GOOD.

The alarm level is the highest level whose condition holds (0 for none); it is reported even in
maintenance, since it is what the panel itself says. Alarm thresholds (where the profile reads
them) are in the detector's unit: DEVICE_ERROR with the concentration when that unit is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from drivers.gds.profile import Profile
from core.types import Quality

FAULT_WITHOUT_CODE = 1


@dataclass(frozen=True)
class ChannelReading:
    concentration: float
    quality: Quality
    status_quality: Quality  # of the alarm level and fault code: bad only when they could not be read
    alarm_level: int
    fault: bool
    fault_code: int
    mode: str | None  # inhibit, calibration or bump_test
    reported_unit: str | None = None  # the detector's own unit, where the profile reads it and it is readable
    unit_code: int = 0  # the raw register the unit was read from
    unit_mismatch: bool = False  # the detector's unit is unreadable or not the configured one
    thresholds: dict[int, tuple[float, Quality]] = field(default_factory=dict)  # level -> value, quality


def unit_mismatch(reading: ChannelReading, configured: str) -> str:
    """Why a channel's unit is wrong, in words naming the configured and the reported unit."""
    reported = reading.reported_unit or f"no unit (code {reading.unit_code:#06x} names none or several)"
    return f"the detector reports {reported}, the channel is configured in {configured}"


def flag_fields(profile: Profile) -> set[str]:
    """The fields whose bits the profile's conditions read."""
    conditions = [*profile.alarms.values(), *profile.modes.values(), *([profile.fault] if profile.fault else [])]
    names = {condition.field for condition in conditions}
    if profile.fault_code:
        names.add(profile.fault_code)
    if profile.unit:
        names.add(profile.unit.field)
    return names


def read_channel(profile: Profile, values: dict[str, float], qualities: dict[str, int],
                 unit: str = "") -> ChannelReading:
    """Interpret one channel from its fields' engineering values and the qualities they were read with;
    `unit` is the channel's configured unit, checked against the detector's where the profile reads it."""
    concentration = values[profile.concentration]
    bad = [Quality(qualities[name]) for name in sorted(flag_fields(profile)) if Quality(qualities[name]).is_bad]
    if bad:
        worst = bad[0]
        own = Quality(qualities[profile.concentration])
        return ChannelReading(concentration, own if own.is_bad else worst, worst, 0, False, 0, None,
                              thresholds=_thresholds(profile, values, qualities, worst))
    raw = {name: int(values[name]) for name in flag_fields(profile)}
    reported, unit_code, mismatch = None, 0, False
    if profile.unit:
        unit_code = raw[profile.unit.field]
        reported = profile.unit.decode(unit_code)
        mismatch = reported != unit
    level = max((level for level, condition in profile.alarms.items() if condition.holds(raw[condition.field])),
                default=0)
    fault = profile.fault is not None and profile.fault.holds(raw[profile.fault.field])
    code = raw[profile.fault_code] if profile.fault_code else 0
    if fault and not code:
        code = FAULT_WITHOUT_CODE
    mode = next((mode for mode, condition in profile.modes.items() if condition.holds(raw[condition.field])), None)
    own = Quality(qualities[profile.concentration])
    if own.is_bad:
        quality = own
    elif mismatch:
        quality = Quality.DEVICE_ERROR
    elif fault:
        quality = Quality.SENSOR_FAULT
    elif mode is not None:
        quality = Quality.MAINTENANCE
    elif not math.isfinite(concentration):
        quality = Quality.OUT_OF_RANGE
    else:
        quality = Quality.GOOD
    thresholds = _thresholds(profile, values, qualities, Quality.DEVICE_ERROR if mismatch else Quality.GOOD)
    return ChannelReading(concentration, quality, Quality.GOOD, level, fault, code if fault else 0, mode,
                          reported, unit_code, mismatch, thresholds)


def _thresholds(profile: Profile, values: dict[str, float], qualities: dict[str, int],
                status: Quality) -> dict[int, tuple[float, Quality]]:
    """Each threshold with its own register's quality when that is bad, else `status`."""
    found = {}
    for level, name in profile.thresholds.items():
        own = Quality(qualities[name])
        found[level] = (values[name], own if own.is_bad else status)
    return found
