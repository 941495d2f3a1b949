"""Garbage and stalls against the real daemon: GOOD values are never older than they say, garbage is
DECODE_ERROR at once and counted, and the healthy PLC beside the hostile peer keeps its rate.

The scenario (`hostile_timing.py`) is shared with `make bench`, which prints the same figures.
"""

from __future__ import annotations

import pytest

import json
from pathlib import Path

from core.types import Quality
from hil_tests import hostile_timing
from hil_tests.hostile_timing import HEALTHY, HOSTILE, POLL

pytestmark = pytest.mark.solo  # judged by timing: `make test` runs it alone


def test_good_values_are_as_fresh_as_their_stamps_under_garbage_and_stalls(tmp_path: Path):
    outcome = hostile_timing.run(tmp_path)
    figures = outcome.figures()
    print(json.dumps({"fault": "hostile_timing", **figures}), flush=True)
    assert "Traceback" not in outcome.log, outcome.log[-3000:]
    assert figures["good_samples"] >= 100, figures
    # the promise: a GOOD value was still the device's value one poll interval (+ 200 ms) before its stamp
    late = sorted(lag for lag in outcome.lags if lag > POLL + 0.2)
    assert not late, f"{len(late)} GOOD samples carried a value replaced up to {late[-1]:.3f} s before their stamp"
    # garbage answers: DECODE_ERROR on the hostile tags, each one counted, none waited out as a timeout
    assert Quality.DECODE_ERROR in outcome.hostile_qualities()
    decode_errors = outcome.metrics[f'gatewayd_device_decode_errors_total{{device="{HOSTILE}"}}']
    garbage = outcome.garbage_answers
    assert garbage >= 10 and garbage - 1 <= decode_errors <= garbage, (garbage, decode_errors)
    assert "no response" not in outcome.log, "a garbage answer was taken for silence"
    # a stall longer than stale_after (three poll intervals): the tags turn STALE while the answer is held
    stale = [ts / 1000 for tag, rows in outcome.samples.items() if tag.startswith(f"{HOSTILE}.")
             for ts, _, quality in rows if quality == Quality.STALE]
    for start, end in outcome.peer["stalls"]:
        assert any(start - POLL <= ts <= end + POLL for ts in stale), (start, end, stale)
    # the healthy PLC beside it: no outage, no bad value, its poll rate kept. A poll late by two
    # intervals (this machine is shared) truthfully turns its tags STALE for a moment: never bad.
    healthy = outcome.healthy_qualities()
    assert set(healthy) <= {Quality.GOOD, Quality.STALE}, healthy
    assert not [event for event in outcome.events
                if event["source"] == HEALTHY and event["kind"] in ("device_down", "device_up")]
    assert outcome.healthy_polls >= 0.8 * outcome.seconds / POLL, figures  # measured 1.002 and 1.003 under load
