"""The text the CLI prints for the daemon's answers: pure functions of those answers (JSON-like dicts),
so the CLI loads nothing of the daemon itself. `status`, `tail` and `reload` first, then the alarm,
interlock, bypass and request commands."""

from __future__ import annotations

import math
import time
from typing import Any

from core.types import Quality, quality_note

FLAGGED_SHOWN = 20  # tags frozen or outside their range that the status screen names


def quality_name(code: int) -> str:
    try:
        return Quality(code).name.lower()
    except ValueError:
        return f"code {code}"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.0f} ms"


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def table_lines(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns padded to their widest cell; an empty cell shows as "-"."""
    cells = [headers] + [["-" if cell is None or cell == "" else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A table inside the status screen, indented under its heading."""
    return ["  " + line for line in table_lines(headers, rows)]


def render_status(status: dict[str, Any]) -> str:
    """The `gatewayd status` screen (a pure function of the status answer)."""
    gateway, now = status["gateway"], status["gateway"]["now"]
    lines = [f"gateway {gateway['id']}" + (f" ({gateway['name']})" if gateway["name"] else "")
             + f"  gatewayd {gateway['version']}  up {_ago(now - gateway['started'])}",
             f"config  {gateway['config']}  sha256 {gateway['config_sha256'][:16]}"
             + (f"  reloaded {gateway['reloads']}x" if gateway["reloads"] else "")
             + (f", {gateway['reloads_refused']} refused" if gateway["reloads_refused"] else ""), ""]
    devices = status["devices"]
    down = sum(1 for device in devices if not device["up"])
    lines.append(f"devices: {len(devices) - down}/{len(devices)} up")
    rows = []
    for device in devices:
        since = device.get("since")
        rows.append([device["name"], device.get("driver"), "up" if device["up"] else "DOWN",
                     _ago(now - since) if since else None, _ms(device.get("last_poll_latency")),
                     device.get("requests_per_poll"), device.get("polls"), device.get("failures"),
                     device.get("reconnects")])
    if rows:
        lines += _table(["DEVICE", "DRIVER", "STATE", "FOR", "LAST POLL", "REQ/POLL", "POLLS", "FAILURES",
                         "RECONNECTS"], rows)
    tags = status["tags"]
    lines += ["", f"tags: {tags['total']}, {tags['good']} good, {tags['uncertain']} uncertain"
              f"{_reasons(tags['uncertain_by_reason'])}, {tags['bad']} bad{_reasons(tags['bad_by_reason'])}"]
    scan = status["scan"]
    lines.append(f"scan: {scan['scans']} ticks, last {_ms(scan['last_scan_seconds'])} "
                 f"(rules {_ms(scan['last_rules_seconds'])}); {scan['samples']} samples, {scan['events']} events "
                 "committed")
    alarms = status["alarms"]
    by_priority = "; ".join(f"{item['priority']} {item['total']} ("
                            + ", ".join(f"{count} {state}" for state, count in item["states"].items()) + ")"
                            for item in alarms["by_priority"])
    lines.append(f"alarms: {alarms['active']} active, {alarms['unacknowledged']} unacknowledged"
                 + (f"; {by_priority}" if by_priority else "") + f" (of {alarms['alarms']} configured)")
    interlocks = status["interlocks"]
    bypassed = interlocks["bypassed"]
    lines.append(f"interlocks: {interlocks['total']}, {len(bypassed)} bypassed")
    for item in bypassed:
        until, since = item.get("authorized_until"), item.get("bypassed_since")
        lines.append(f"  {item['id']} bypassed for {_ago(now - since) if since else '-'}"
                     + (f", authorized for {_ago(until - now)} more" if until else ", NO AUTHORIZATION")
                     + (f" [{', '.join(item['flags'])}]" if item["flags"] else ""))
    store = status["store"]
    lines += ["", f"store: {store['rows_pending']} rows pending, {store['rows_inflight']} in flight in "
              f"{store['batches_pending']} batches; oldest unsent {_ago(store['oldest_pending_age'])}; "
              f"{_bytes(store['db_bytes'])} on disk"
              + (f"; {store['evicted']} samples evicted" if store.get("evicted") else "")]
    uplink = status["uplink"]
    state = "connected" if uplink["connected"] else "DISCONNECTED"
    rates = uplink.get("rates")
    rate = (f"{rates['acknowledged_per_second'] * 60:.1f} batches/min, {rates['rows_acknowledged_per_second']:.1f} "
            f"rows/s, {_bytes(rates['bytes_published_per_second'])}/s over {rates['window_seconds']:.0f} s"
            if rates else "rate: not measured yet")
    lines.append(f"uplink: {state} to {uplink['broker']}; {uplink['inflight']} batches in flight, "
                 f"{uplink['acknowledged']} acknowledged (last {_ago(uplink['last_ack_age'])} ago), "
                 f"{uplink['disconnects']} disconnects; {rate}")
    lines += _data_quality_lines(status.get("data_quality"))
    if status.get("tails"):
        lines.append(f"tails following: {status['tails']}")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _reasons(by_reason: dict[str, int]) -> str:
    """` (3 stale, 1 uncertain)`, or nothing when there are none."""
    return f" ({', '.join(f'{count} {reason}' for reason, count in by_reason.items())})" if by_reason else ""


def _data_quality_lines(quality: dict[str, Any] | None) -> list[str]:
    """Per device: online share, completeness and age p50/p95 of the period and since start."""
    if quality is None:
        return []
    lines = ["", f"data quality: period {_ago(quality['period_seconds'])} of {_ago(quality['interval'])}, "
             f"since start {_ago(quality['since_start_seconds'])}"]
    rows = []
    for device in quality["devices"]:
        period, total = device["period"], device["since_start"]
        rows.append([device["device"], f"{_share(period['online'])} / {_share(total['online'])}",
                     f"{_share(period['completeness'])} / {_share(total['completeness'])}",
                     f"{_ms(period['age_p50'])} / {_ms(period['age_p95'])}",
                     device["frozen_tags"], device["outside_range_tags"],
                     period["rate_violations"]])
    if rows:
        lines += _table(["DEVICE", "ONLINE (PERIOD / START)", "COMPLETE (PERIOD / START)", "AGE P50 / P95",
                         "FROZEN", "OUT OF RANGE", "RATE VIOLATIONS"], rows)
    flagged = quality["flagged"]
    for item in flagged[:FLAGGED_SHOWN]:
        what = " and ".join(flag for flag, on in (("frozen", item["frozen"]),
                                                  ("outside its range", item["outside_range"])) if on)
        lines.append(f"  {item['tag']} {what}")
    if len(flagged) > FLAGGED_SHOWN:
        lines.append(f"  ... and {len(flagged) - FLAGGED_SHOWN} more (gatewayd status --json)")
    return lines


def render_tail_line(line: dict[str, Any]) -> str | None:
    """One `gatewayd tail` line; None for lines that carry nothing to show (keepalives)."""
    kind = line.get("type")
    if kind == "sample":
        stamp = time.strftime("%H:%M:%S", time.localtime(line["ts"])) + f".{int(line['ts'] * 1000) % 1000:03d}"
        value = "-" if line["value"] is None else f"{line['value']:.6g}"
        quality = "" if line["quality"] == 0 else f"  {quality_name(line['quality'])}"
        unit = f" {line['unit']}" if line.get("unit") else ""
        return f"{stamp}  {line['tag']:<16} {value}{unit}{quality}"
    if kind == "event":
        stamp = time.strftime("%H:%M:%S", time.localtime(line["ts"])) + f".{int(line['ts'] * 1000) % 1000:03d}"
        return f"{stamp}  EVENT {line['kind']} [{line['source']}] {line['message']}"
    if kind == "dropped":
        return f"... {line['count']} lines dropped: this terminal reads slower than the gateway produces"
    if kind == "following":
        filter = line["filter"]
        what = " ".join(f"{key} {value}" for key, value in (("tag", filter["tag"]), ("device", filter["device"]))
                        if value) or "all tags"
        samples = "events only" if filter["events_only"] else f"{line['tags']} tags"
        return f"following {what}: {samples} and their events (Ctrl-C ends)"
    return None


def render_reload(result: dict[str, Any]) -> str:
    if not result["applied"]:
        return f"configuration unchanged (sha256 {result['sha256'][:16]})"
    lines = [f"configuration reloaded (sha256 {result['sha256'][:16]}): {result['summary']}"]
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ alarms, bypass, requests

def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(table_lines(headers, rows))


def local_time(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def render_alarms(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no alarms outside NORM"
    rows = []
    for item in items:
        value = ("?" if item["value"] is None else f"{item['value']:g} {item['unit']}".strip()) \
            + quality_note(item.get("quality"))
        notes = ["latched"] if item["latched"] else []
        if item["shelved_until"]:
            notes.append(f"shelved until {local_time(item['shelved_until'])}")
        if item["kind"] == "gas":
            notes.append(f"gas level {item['gas_level']} ({item['gas_type']})")
        rows.append([item["id"], item["state"], item["priority"], value, local_time(item["since"]),
                     ", ".join(notes) or item["description"]])
    return format_table(["ALARM", "STATE", "PRIORITY", "VALUE", "SINCE", "NOTE"], rows)


def render_events(result: dict[str, Any]) -> str:
    return "\n".join(event["message"] for event in result["events"])


def render_request(result: dict[str, Any]) -> str:
    """What an operator sees after asking: the request number the approver needs."""
    if "request" not in result:  # an alarm that is not highly managed: done at once
        return render_events(result)
    record = result["request"]
    return (f"request {record['id']}: {record['kind'].replace('_', ' ')} {record['target']}, permit "
            f"{record['permit']}; it takes effect when another account with the approver role runs "
            f"`gatewayd approve {record['id']}` before {local_time(record['expires_at'])}\n" + render_events(result))


def render_approval(result: dict[str, Any]) -> str:
    record, authorization = result["request"], result.get("authorization")
    lines = [f"request {record['id']} of {record['requested_by']} approved"]
    if authorization:
        lines[0] += (f": authorization {authorization['id']} for {authorization['interlock']} until "
                     f"{local_time(authorization['start'] + authorization['duration'])}")
    return "\n".join(lines) + "\n" + render_events(result)


def render_requests(items: list[dict[str, Any]]) -> str:
    from rules.isa import format_seconds  # rules.isa loads numpy: only when this list is shown

    if not items:
        return "no request waiting for approval"
    return format_table(["ID", "ASKS TO", "TARGET", "STATUS", "FOR", "PERMIT", "REQUESTED BY", "EXPIRES",
                         "APPROVED BY", "REASON"],
                        [[item["id"], item["kind"].replace("_", " "), item["target"], item["status"],
                          format_seconds(item["duration"]), item["permit"], item["requested_by"],
                          local_time(item["expires_at"]), item["approved_by"], item["reason"]] for item in items])


def render_bypass_list(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no bypass authorization in force"
    return format_table(["ID", "INTERLOCK", "STATUS", "FROM", "UNTIL", "BYPASSED", "PERMIT", "REQUESTED BY",
                         "APPROVED BY", "REASON"],
                        [[item["id"], item["interlock"], item["status"], local_time(item["start"]),
                          local_time(item["end"]), bypassed_text(item), item["permit"], item["requested_by"],
                          item["approved_by"], item["reason"]] for item in items])


def bypassed_text(item: dict[str, Any]) -> str:
    """`14m in 2 episodes`: how long the interlock was bypassed under this authorization."""
    episodes = len(item.get("episodes", ()))
    if not episodes:
        return "-"
    return f"{round(item['bypassed_seconds'] / 60)}m in {episodes} episode{'s' if episodes != 1 else ''}"


def quality_text(code: int) -> str:
    return "good" if code == 0 else f"bad ({code})" if code >= 16 else f"uncertain ({code})"


def render_interlocks(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no interlocks configured"
    return format_table(["INTERLOCK", "UNIT", "STATUS", "QUALITY", "BYPASSED SINCE", "AUTHORIZED UNTIL", "FLAGS"],
                        [[item["id"], item["unit"], item["status"], quality_text(item["quality"]),
                          local_time(item["bypassed_since"]), local_time(item["authorized_until"]),
                          ", ".join(item["flags"])] for item in items])
