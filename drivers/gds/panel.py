"""What a gas channel's registers mean, as a pure function of their values and qualities.

Precedence of a channel's quality, most telling first:
1. a bad quality of any register the channel needs (comm failure, exception, garbage): that one;
2. the channel's fault condition: SENSOR_FAULT, with the fault code;
3. inhibit, calibration or bump test: MAINTENANCE (the reading is not the plant's gas, and the
   panel's alarms are usually held, but nothing is wrong);
4. a concentration that decoded to NaN or infinity: OUT_OF_RANGE;
5. GOOD.

The alarm level is the highest level whose condition holds (0 for none); it is reported even in
maintenance, since it is what the panel itself says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.gds.profile import Profile
from gatewayd.types import Quality

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


def flag_fields(profile: Profile) -> set[str]:
    """The fields whose bits the profile's conditions read."""
    conditions = [*profile.alarms.values(), *profile.modes.values(), *([profile.fault] if profile.fault else [])]
    names = {condition.field for condition in conditions}
    if profile.fault_code:
        names.add(profile.fault_code)
    return names


def read_channel(profile: Profile, values: dict[str, float], qualities: dict[str, int]) -> ChannelReading:
    """Interpret one channel from its fields' engineering values and the qualities they were read with."""
    concentration = values[profile.concentration]
    bad = [Quality(qualities[name]) for name in sorted(flag_fields(profile)) if Quality(qualities[name]).is_bad]
    if bad:
        worst = bad[0]
        own = Quality(qualities[profile.concentration])
        return ChannelReading(concentration, own if own.is_bad else worst, worst, 0, False, 0, None)
    raw = {name: int(values[name]) for name in flag_fields(profile)}
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
    elif fault:
        quality = Quality.SENSOR_FAULT
    elif mode is not None:
        quality = Quality.MAINTENANCE
    elif not math.isfinite(concentration):
        quality = Quality.OUT_OF_RANGE
    else:
        quality = Quality.GOOD
    return ChannelReading(concentration, quality, Quality.GOOD, level, fault, code if fault else 0, mode)
