"""The alarm-load replay at a small size: every real excursion is caught by the configured engine, and
deadbands, delays and bad-PV consolidation raise far fewer alarms than naive threshold crossing."""

from __future__ import annotations

import pytest

from bench.bench_alarm_load import HIGH, chunks, naive_alarms, plan, run


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_every_real_excursion_is_caught_with_a_fraction_of_the_naive_alarms(seed):
    result = run(tags=250, seconds=2 * 3600, seed=seed)
    assert len(result["caught"]) == 2
    for excursion, when in result["caught"]:
        assert when is not None, f"excursion on T{excursion.tag} at {excursion.start:.0f} s missed"
        assert excursion.start <= when <= excursion.start + 60.0 + 10.0 + 5.0, "raised within ramp and on-delay"
    naive, configured = sum(result["naive"].values()), sum(result["configured"].values())
    assert configured < 0.2 * naive
    assert result["configured"]["BADPV"] < result["naive"]["BADPV"], "flickers shorter than 10 s raise nothing"


def test_the_naive_count_is_the_number_of_setpoint_crossings():
    plant = plan(tags=20, seconds=600, seed=5)
    counts = naive_alarms(plant, 600, 5)
    [(_, values, bad)] = list(chunks(plant, 600, 5))
    read = values.copy()
    read[bad] = 0.0
    crossings = sum(int(read[0, n] >= HIGH) + sum(1 for t in range(1, 600) if read[t, n] >= HIGH > read[t - 1, n])
                    for n in range(20))
    assert counts["H"] == crossings
