"""What of a `rules.engine.RuleEngine` survives a restart, and how it comes back.

The engine runs on the monotonic clock, which restarts with the process; a saved state is therefore
kept on the wall clock, and converted at each end. Saving and restoring is its own job, apart from the
scan and the operator actions, so that what persists (and what a format change must keep readable,
`STATE_VERSION`) reads in one place. `RuleEngine.state_dict` and `RuleEngine.restore` are the callers;
they pass the engine in, so this module never imports `rules.engine` (no cycle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rules import isa, managed
from rules.isa import STATE_NAMES
from rules.model import jsonable

STATE_VERSION = 1


def save(engine: Any, to_wall: Callable[[float], float], saved_at: float) -> dict[str, Any]:
    """JSON-ready state: alarm states, shelves, out of service, latches, interlock bypass state and
    flags, bypass authorizations and requests. `to_wall` turns the engine's monotonic times to wall time."""
    arrays = engine.arrays
    interesting = np.nonzero((arrays.state != isa.NORM) | (arrays.active != 0) | (arrays.latch != 0)
                             | (arrays.oos != 0) | (engine.cond != 0) | (arrays.hidden != 0))[0]
    alarms = {}
    for i in interesting.tolist():
        shelved = float(arrays.shelved_until[i])
        alarms[engine.infos[i].id] = {
            "state": STATE_NAMES[int(arrays.state[i])], "active": int(arrays.active[i]),
            "cond": int(engine.cond[i]), "latch": int(arrays.latch[i]), "oos": int(arrays.oos[i]),
            "since": to_wall(float(arrays.since[i])),
            "active_since": to_wall(float(arrays.active_since[i])), "stale": int(arrays.stale[i]),
            "shelved_until": None if math.isnan(shelved) else to_wall(shelved),
            "one_shot": int(arrays.oneshot[i]), "hidden": int(arrays.hidden[i]),
        }
    interlocks = {}
    for k, interlock in enumerate(engine.interlock_ids):
        interlocks[interlock] = {"bypassed": int(engine.bypassed[k]), "trip": int(engine.trip[k]),
                                 "since": to_wall(float(engine.bypass_since[k])),
                                 "since_wall": float(engine.bypass_wall[k]),
                                 "flags": [int(x) for x in engine.flags[k]],
                                 "consequences_until": jsonable(to_wall(
                                     float(engine.trips.consequences_until[k])))}
    return {"version": STATE_VERSION, "saved_at": saved_at, "alarms": alarms,
            "suppression": {source: int(arrays.supp[g]) for g, source in enumerate(engine.suppression_sources)},
            "interlocks": interlocks,
            "units": {name: int(engine.unit_flag[u]) for u, name in enumerate(engine.unit_names)},
            "managed": {engine.infos[i].id: authorization.to_dict()
                        for i, (authorization, _) in engine.managed.items()},
            "bypass": engine.registry.to_dict(), "requests": engine.requests.to_dict()}


def version_note(data: Mapping[str, Any]) -> str | None:
    """Why a saved state cannot be loaded (a version this code does not read), or None when it can."""
    if data.get("version") != STATE_VERSION:
        return f"state version {data.get('version')!r} not understood; starting from NORM"
    return None


def restore(engine: Any, data: Mapping[str, Any], now: float, wall: float) -> list[str]:
    """Load a `save`d state whose version is understood (`version_note`) into `engine` at (`now`
    monotonic, `wall`); ids no longer configured are skipped and named in the returned notes. The
    caller syncs the authorization windows afterwards."""
    def to_mono(t: float) -> float:
        return now - (wall - t)

    notes = _restore_alarms(engine, data, to_mono)
    notes += _restore_interlocks(engine, data, to_mono)
    engine.managed.clear()
    for alarm_id, saved in data.get("managed", {}).items():
        i = engine.index.get(alarm_id)
        if i is None:
            notes.append(f"alarm {alarm_id} is no longer configured; its authorization was dropped")
            continue
        authorization = managed.AlarmAuthorization(**{key: saved[key] for key in (
            "alarm", "action", "permit", "approved_by", "requested_by", "start", "duration")})
        engine.managed[i] = (authorization, to_mono(authorization.until))
    engine.registry.from_dict(data.get("bypass", {}))
    engine.requests.from_dict(data.get("requests", {}))
    return notes


def _restore_alarms(engine: Any, data: Mapping[str, Any], to_mono: Callable[[float], float]) -> list[str]:
    notes = []
    arrays = engine.arrays
    names = {name: code for code, name in enumerate(STATE_NAMES)}
    for alarm_id, saved in data.get("alarms", {}).items():
        i = engine.index.get(alarm_id)
        if i is None:
            notes.append(f"alarm {alarm_id} is no longer configured; its state was dropped")
            continue
        arrays.state[i] = names[saved["state"]]
        arrays.active[i], engine.cond[i] = saved["active"], saved["cond"]
        arrays.latch[i], arrays.oos[i], arrays.stale[i] = saved["latch"], saved["oos"], saved["stale"]
        arrays.since[i], arrays.active_since[i] = to_mono(saved["since"]), to_mono(saved["active_since"])
        shelved = saved["shelved_until"]
        arrays.shelved_until[i] = math.nan if shelved is None else to_mono(shelved)
        arrays.oneshot[i], arrays.hidden[i] = saved["one_shot"], saved.get("hidden", 0)
    for g, source in enumerate(engine.suppression_sources):
        arrays.supp[g] = data.get("suppression", {}).get(source, 0)
    return notes


def _restore_interlocks(engine: Any, data: Mapping[str, Any],
                        to_mono: Callable[[float], float]) -> list[str]:
    notes = []
    for interlock, saved in data.get("interlocks", {}).items():
        k = engine.interlock_index.get(interlock)
        if k is None:
            notes.append(f"interlock {interlock} is no longer configured; its state was dropped")
            continue
        engine.bypassed[k], engine.trip[k] = saved["bypassed"], saved["trip"]
        engine.bypass_since[k] = to_mono(saved["since"])
        engine.bypass_wall[k] = saved.get("since_wall", saved["since"])
        engine.flags[k, :len(saved["flags"])] = saved["flags"]  # a flag added since is clear
        engine.in_service[k] = 0.0 if saved["bypassed"] else 1.0
        until = saved.get("consequences_until")
        engine.trips.consequences_until[k] = -math.inf if until is None else to_mono(until)
    engine.trips.restored(engine.trip)
    for u, name in enumerate(engine.unit_names):
        engine.unit_flag[u] = data.get("units", {}).get(name, 0)
    return notes
