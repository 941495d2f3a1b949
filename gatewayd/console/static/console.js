/* gatewayd console: the page's script. Written for this project; no library, nothing loaded from elsewhere.
 *
 * The server pushes a snapshot of the daemon (status, points, alarms, who shelved what, interlocks,
 * bypass authorizations) as server-sent events on /api/stream whenever it takes one; every page is
 * drawn from the latest snapshot. Trends ask /api/trend for a tag's history and draw it as SVG.
 * All text goes into the page as text (textContent), never as markup.
 */
"use strict";

const state = { snapshot: null, page: "overview", pointRows: new Map(), trend: null };
const QUALITY_BAD_MIN = 16;
const SERIES_COLOURS = ["#1f5fa8", "#b3261e", "#1f7a3a", "#7a3ea8", "#a86500", "#00838f", "#5d4037", "#455a64"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function qualityKind(code) {
  if (code === 0) return "good";
  return code >= QUALITY_BAD_MIN ? "bad" : "uncertain";
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  seconds = Math.max(0, seconds);
  if (seconds >= 86400) return (seconds / 86400).toFixed(1) + " d";
  if (seconds >= 3600) return (seconds / 3600).toFixed(1) + " h";
  if (seconds >= 60) return (seconds / 60).toFixed(1) + " min";
  return seconds.toFixed(0) + " s";
}

function clock(ts) {
  if (!ts) return "-";
  const date = new Date(ts * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function number(value, unit) {
  if (value === null || value === undefined) return "-";
  const text = Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3)
    ? value.toExponential(3) : String(Number(value.toPrecision(6)));
  return unit ? text + " " + unit : text;
}

function bytes(count) {
  if (count === null || count === undefined) return "-";
  for (const unit of ["B", "kB", "MB", "GB"]) {
    if (Math.abs(count) < 1000 || unit === "GB") return (unit === "B" ? count.toFixed(0) : count.toFixed(1)) + " " + unit;
    count /= 1000;
  }
}

function percent(share) { return share === null || share === undefined ? "-" : (100 * share).toFixed(1) + "%"; }

function fillBody(table, rows) {
  const body = document.querySelector(table + " tbody");
  body.replaceChildren(...rows);
}

/* ------------------------------------------------------------------ the link to the server */

function connect() {
  fetch("/api/snapshot").then(r => r.ok ? r.json() : null).then(data => { if (data && !state.snapshot) show(data); });
  const source = new EventSource("/api/stream");
  source.onmessage = message => show(JSON.parse(message.data));
  source.onerror = () => setLink("console unreachable; retrying…", false);
}

function setLink(text, ok) {
  const link = document.getElementById("link");
  link.textContent = text;
  link.className = "link " + (ok ? "ok" : "down");
}

function show(snapshot) {
  state.snapshot = snapshot;
  if (snapshot.error) setLink("daemon unreachable: " + snapshot.error, false);
  else setLink("live, " + new Date(snapshot.taken * 1000).toLocaleTimeString(), true);
  const gateway = (snapshot.status || {}).gateway;
  if (gateway) {
    document.getElementById("gateway").textContent = gateway.id;
    document.getElementById("gateway-name").textContent = gateway.name || "";
    document.title = gateway.id + ": gatewayd console";
  }
  const alarms = (snapshot.status || {}).alarms;
  document.getElementById("alarm-badge").textContent = alarms && alarms.unacknowledged ? alarms.unacknowledged : "";
  renderOverview();
  renderPoints();
  renderAlarms();
  renderInterlocks();
  updateTrendTags();
  if (state.page === "trends" && state.trend && state.trend.follow) followTrend();
}

/* ------------------------------------------------------------------ overview */

function card(title, big, detail, alert) {
  return el("div", { class: "card" + (alert ? " alert" : "") }, el("h3", {}, title),
    el("div", { class: "big" }, big), detail ? el("div", { class: "hint" }, detail) : null);
}

function renderOverview() {
  const status = state.snapshot.status;
  const page = document.getElementById("overview");
  if (!status) { page.replaceChildren(el("p", { class: "error" }, state.snapshot.error || "no answer yet")); return; }
  const now = status.gateway.now;
  const devices = status.devices;
  const down = devices.filter(d => !d.up).length;
  const tags = status.tags, store = status.store, uplink = status.uplink, alarms = status.alarms;
  const byPriority = alarms.by_priority.map(item => item.priority + " " + item.total).join(", ") || "none outside NORM";
  const cards = el("div", { class: "cards" },
    card("Devices", (devices.length - down) + " / " + devices.length + " up", down ? down + " down" : "all answering", down > 0),
    card("Tags", tags.good + " good", tags.uncertain + " uncertain, " + tags.bad + " bad", tags.bad > 0),
    card("Alarms", alarms.active + " active", alarms.unacknowledged + " unacknowledged; " + byPriority,
      alarms.unacknowledged > 0),
    card("Alarm flood", alarms.flood ? "FLOOD" : "no flood",
      (alarms.per_10min === null || alarms.per_10min === undefined ? "-" : alarms.per_10min) + " alarms in the last 10 min",
      alarms.flood),
    card("Uplink", uplink.connected ? "connected" : "DISCONNECTED",
      uplink.broker + "; last acknowledgement " + ago(uplink.last_ack_age) + " ago", !uplink.connected),
    card("Backlog", store.rows_pending + " rows", "oldest unsent " + ago(store.oldest_pending_age) + "; " +
      store.rows_inflight + " in flight", store.oldest_pending_age > 300),
    card("Store", bytes(store.db_bytes), store.history_bytes !== undefined
      ? "history " + bytes(store.history_bytes) + " over " + store.history_days + " days" : "outbox on disk"));
  const quality = {};
  for (const device of (status.data_quality || { devices: [] }).devices) quality[device.device] = device;
  const rows = devices.map(device => {
    const figures = quality[device.name];
    const period = figures ? figures.period : {};
    return el("tr", { "data-device": device.name },
      el("td", {}, device.name), el("td", {}, device.driver),
      el("td", { class: device.up ? "q-good" : "q-bad" }, device.up ? "up" : "DOWN"),
      el("td", {}, device.since ? ago(now - device.since) : "-"),
      el("td", { class: "num" }, device.last_poll_latency === null ? "-" : (device.last_poll_latency * 1000).toFixed(0) + " ms"),
      el("td", { class: "num" }, percent(period.online)), el("td", { class: "num" }, percent(period.completeness)),
      el("td", { class: "num" }, period.age_p95 === null || period.age_p95 === undefined ? "-" : (period.age_p95 * 1000).toFixed(0) + " ms"),
      el("td", { class: "num" }, figures ? figures.frozen_tags : "-"),
      el("td", { class: "num" }, figures ? figures.outside_range_tags : "-"),
      el("td", {}, device.last_error ? clock(device.last_error_at) + " " + device.last_error : "-"));
  });
  const table = el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["Device", "Driver", "State", "For", "Last poll", "Online", "Complete",
      "Age p95", "Frozen", "Out of range", "Last error"].map(h => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  page.replaceChildren(cards, el("h2", {}, "Devices and data quality (this period)"), table,
    el("p", { class: "hint" }, "gatewayd " + status.gateway.version + ", up " + ago(now - status.gateway.started) +
      ", config sha256 " + status.gateway.config_sha256.slice(0, 16)));
}

/* ------------------------------------------------------------------ point table */

function pointFilter() {
  return { device: document.getElementById("filter-device").value,
    tag: document.getElementById("filter-tag").value.trim().toLowerCase(),
    quality: document.getElementById("filter-quality").value };
}

function limitsText(limits) {
  return Object.entries(limits || {}).map(([level, value]) => level + " " + number(value)).join(", ") || "-";
}

function pointRow(point) {
  const cells = {
    value: el("td", { class: "num value" }), quality: el("td", { class: "quality" }), age: el("td", { class: "num age" }),
  };
  const trend = el("button", { title: "draw this tag's trend" }, "trend");
  trend.addEventListener("click", () => openTrend([point.tag]));
  const row = el("tr", { "data-tag": point.tag }, el("td", {}, point.tag), el("td", {}, point.device || "(rules)"),
    el("td", {}, point.description), cells.value, el("td", {}, point.unit), cells.quality, cells.age,
    el("td", {}, point.range ? number(point.range[0]) + " … " + number(point.range[1]) : "-"),
    el("td", {}, limitsText(point.limits)), el("td", {}, trend));
  return { row, cells };
}

function renderPoints() {
  const points = state.snapshot.points || [];
  const devices = document.getElementById("filter-device");
  const known = new Set([...devices.options].map(option => option.value));
  for (const device of new Set(points.map(point => point.device))) {
    if (!known.has(device)) devices.append(el("option", { value: device }, device || "(rules)"));
  }
  const filter = pointFilter();
  const shown = [];
  for (const point of points) {
    let entry = state.pointRows.get(point.tag);
    if (!entry) { entry = pointRow(point); state.pointRows.set(point.tag, entry); }
    const kind = qualityKind(point.quality);
    entry.cells.value.textContent = number(point.value);
    entry.cells.quality.textContent = point.quality_name;
    entry.cells.quality.className = "quality q-" + kind;
    entry.cells.age.textContent = ago(point.age);
    if ((!filter.device || filter.device === point.device) && (!filter.tag || point.tag.toLowerCase().includes(filter.tag)
        || (point.description || "").toLowerCase().includes(filter.tag)) && (!filter.quality || filter.quality === kind)) {
      shown.push(entry.row);
    }
  }
  const body = document.querySelector("#points-table tbody");
  if (shown.length !== body.children.length || shown.some((row, i) => body.children[i] !== row)) body.replaceChildren(...shown);
  document.getElementById("points-count").textContent = shown.length + " of " + points.length + " tags";
}

/* ------------------------------------------------------------------ alarms */

function shelvedText(alarm, actions) {
  const action = actions[alarm.id];
  const who = action ? " by " + action.by + (action.reason ? " (" + action.reason + ")" : "") : "";
  if (alarm.state === "SHLVD") {
    return "shelved" + who + " until " + (alarm.shelved_until ? clock(alarm.shelved_until) : "it clears");
  }
  if (alarm.state === "OOSRV") {
    const until = alarm.authorization ? alarm.authorization.until || (action && action.until) : action && action.until;
    return "out of service" + who + (until ? " until " + clock(until) : "");
  }
  if (alarm.state === "DSUPR") return "suppressed by design (a suppression rule holds)";
  return alarm.latched ? "latched: needs a reset" : "";
}

function renderAlarms() {
  const all = state.snapshot.alarms || [];
  const actions = state.snapshot.alarm_actions || {};
  const includeNormal = document.getElementById("alarms-all").checked;
  const listed = all.filter(alarm => includeNormal || alarm.state !== "NORM" || alarm.latched);
  fillBody("#alarms-table", listed.map(alarm => el("tr", { class: "state-" + alarm.state, "data-alarm": alarm.id },
    el("td", {}, alarm.id), el("td", { class: "state" }, alarm.state),
    el("td", {}, el("span", { class: "prio-" + alarm.priority }, alarm.priority)),
    el("td", { class: "num " + "q-" + qualityKind(alarm.quality) }, number(alarm.value, alarm.unit) +
      (alarm.quality ? " [" + qualityName(alarm.quality) + "]" : "")),
    el("td", {}, alarm.state === "NORM" ? "-" : clock(alarm.since)),
    el("td", {}, shelvedText(alarm, actions)),
    el("td", {}, alarm.kind === "gas" ? "gas level " + alarm.gas_level + " (" + alarm.gas_type + ") " + alarm.description
      : alarm.description))));
  document.getElementById("alarms-count").textContent = listed.length + " shown of " + all.length + " configured";
}

function qualityName(code) {
  const point = (state.snapshot.points || []).find(p => p.quality === code);
  return point ? point.quality_name : "quality " + code;
}

/* ------------------------------------------------------------------ interlocks and bypasses */

function renderInterlocks() {
  const interlocks = state.snapshot.interlocks || [];
  const bypasses = state.snapshot.bypasses || [];
  const now = (state.snapshot.status || {}).gateway ? state.snapshot.status.gateway.now : Date.now() / 1000;
  fillBody("#interlocks-table", interlocks.map(item => {
    const authorization = bypasses.find(b => b.interlock === item.id && b.status === "active");
    const until = item.authorized_until;
    return el("tr", { "data-interlock": item.id, class: item.status === "bypassed" ? "state-UNACK" : "" },
      el("td", {}, item.id), el("td", {}, item.unit),
      el("td", { class: item.status === "bypassed" ? "q-bad" : "q-good" }, item.status === "bypassed" ? "BYPASSED" : "in service"),
      el("td", { class: "q-" + qualityKind(item.quality) }, qualityKind(item.quality)),
      el("td", {}, item.bypassed_since ? clock(item.bypassed_since) : "-"),
      el("td", {}, authorization ? "#" + authorization.id + " permit " + authorization.permit + ", " +
        authorization.requested_by + " / " + authorization.approved_by
        : item.status === "bypassed" ? "NO AUTHORIZATION" : "-"),
      el("td", {}, until ? ago(until - now) : "-"),
      el("td", {}, (item.flags || []).join(", ") || "-"));
  }));
  fillBody("#bypasses-table", bypasses.map(item => el("tr", {},
    el("td", {}, item.id), el("td", {}, item.interlock), el("td", {}, item.status), el("td", {}, clock(item.start)),
    el("td", {}, clock(item.end)), el("td", {}, item.permit), el("td", {}, item.requested_by),
    el("td", {}, item.approved_by), el("td", {}, item.reason))));
}

/* ------------------------------------------------------------------ trends */

function updateTrendTags() {
  const select = document.getElementById("trend-tags");
  if (select.options.length) return;
  for (const point of state.snapshot.points || []) select.append(el("option", { value: point.tag }, point.tag));
}

function openTrend(tags) {
  const select = document.getElementById("trend-tags");
  for (const option of select.options) option.selected = tags.includes(option.value);
  location.hash = "#trends";
  setRange(600);
}

function selectedTags() {
  return [...document.getElementById("trend-tags").selectedOptions].map(option => option.value);
}

function setRange(seconds) {
  state.trend = { range: seconds, follow: document.getElementById("trend-follow").checked, zoomed: null };
  for (const button of document.querySelectorAll("#trend-ranges button")) {
    button.classList.toggle("active", Number(button.dataset.range) === seconds);
  }
  document.getElementById("trend-zoom-out").disabled = true;
  loadTrend();
}

function followTrend() {
  if (!state.trend.zoomed && !state.trend.loading && Date.now() - (state.trend.loadedAt || 0) > 5000) loadTrend();
}

function loadTrend() {
  const tags = selectedTags();
  if (!tags.length || !state.trend) return;
  const end = state.trend.zoomed ? state.trend.zoomed[1] : Date.now() / 1000;
  const start = state.trend.zoomed ? state.trend.zoomed[0] : end - state.trend.range;
  const query = new URLSearchParams(tags.map(tag => ["tag", tag]));
  query.set("from", start.toFixed(3));
  query.set("to", end.toFixed(3));
  state.trend.loading = true;
  fetch("/api/trend?" + query).then(r => r.json()).then(answer => {
    state.trend.loading = false;
    state.trend.loadedAt = Date.now();
    if (answer.error) { document.getElementById("trend-status").textContent = answer.error; return; }
    drawTrend(answer);
  }).catch(error => { state.trend.loading = false; document.getElementById("trend-status").textContent = String(error); });
}

function niceTicks(low, high, count) {
  const step = Math.pow(10, Math.floor(Math.log10((high - low) / count)));
  const factor = [1, 2, 5, 10].find(f => (high - low) / (step * f) <= count) || 10;
  const size = step * factor;
  const ticks = [];
  for (let v = Math.ceil(low / size) * size; v <= high + 1e-9; v += size) ticks.push(v);
  return ticks;
}

function drawTrend(answer) {
  const chart = document.getElementById("trend-chart");
  const width = Math.max(chart.clientWidth, 400), height = 420;
  const margin = { left: 60, right: 70, top: 10, bottom: 28 };
  const points = new Map((state.snapshot.points || []).map(point => [point.tag, point]));
  const tags = Object.keys(answer.series);
  let low = Infinity, high = -Infinity;
  for (const tag of tags) {
    const series = answer.series[tag];
    for (const v of series.low) if (v !== null) low = Math.min(low, v);
    for (const v of series.high) if (v !== null) high = Math.max(high, v);
    for (const v of Object.values((points.get(tag) || {}).limits || {})) { low = Math.min(low, v); high = Math.max(high, v); }
  }
  if (!isFinite(low)) { low = 0; high = 1; }
  if (high - low < 1e-9) { low -= 1; high += 1; }
  const pad = (high - low) * 0.05;
  low -= pad; high += pad;
  const x = ts => margin.left + (ts - answer.from) / (answer.to - answer.from) * (width - margin.left - margin.right);
  const y = v => margin.top + (high - v) / (high - low) * (height - margin.top - margin.bottom);
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, "data-from": answer.from, "data-to": answer.to });
  const axis = svg("g", { class: "axis" });
  for (const v of niceTicks(low, high, 6)) {
    axis.append(svg("line", { class: "gridline", x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }));
    axis.append(svg("text", { x: margin.left - 6, y: y(v) + 4, "text-anchor": "end" }, number(v)));
  }
  const span = answer.to - answer.from;
  for (let i = 0; i <= 5; i++) {
    const ts = answer.from + span * i / 5;
    const date = new Date(ts * 1000);
    const label = span > 2 * 86400 ? date.toLocaleDateString() + " " + date.toLocaleTimeString().slice(0, 5)
      : date.toLocaleTimeString();
    axis.append(svg("text", { x: x(ts), y: height - 8, "text-anchor": "middle" }, label));
  }
  root.append(axis);
  const legend = [], labelsAt = [];
  tags.forEach((tag, index) => {
    const series = answer.series[tag];
    const colour = SERIES_COLOURS[index % SERIES_COLOURS.length];
    for (const stretch of series.stretches) {
      root.append(svg("rect", { class: "stretch " + stretch.kind, "data-tag": tag, x: x(stretch.from), y: margin.top,
        width: Math.max(1, x(stretch.to) - x(stretch.from)), height: height - margin.top - margin.bottom },
      ));
    }
    let path = "", pen = "M";
    let drawnHigh = null;
    series.ts.forEach((ts, i) => {
      if (series.low[i] === null) { pen = "M"; return; }
      path += pen + x(ts).toFixed(1) + "," + y(series.low[i]).toFixed(1);
      pen = "L";
      if (series.high[i] !== series.low[i]) path += "L" + x(ts).toFixed(1) + "," + y(series.high[i]).toFixed(1);
      drawnHigh = drawnHigh === null ? series.high[i] : Math.max(drawnHigh, series.high[i]);
    });
    root.append(svg("path", { d: path, fill: "none", stroke: colour, "stroke-width": 1.6, "data-tag": tag,
      "data-high": drawnHigh === null ? "" : drawnHigh, "data-samples": series.samples }));
    for (const [level, value] of Object.entries((points.get(tag) || {}).limits || {})) {
      root.append(svg("line", { class: "limit", stroke: colour, x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value) }));
      let labelY = y(value) + 4;
      while (labelsAt.some(taken => Math.abs(taken - labelY) < 12)) labelY += 12;  // limits close together
      labelsAt.push(labelY);
      root.append(svg("text", { class: "limit-label", fill: colour, x: width - margin.right + 4, y: labelY },
        tag + " " + level));
    }
    const unit = (points.get(tag) || {}).unit;
    const swatch = el("i");
    swatch.style.background = colour;
    legend.push(el("span", {}, swatch, tag + (unit ? " (" + unit + ")" : "") +
      ": " + series.samples + " samples" + (series.stretches.length ? ", " + series.stretches.length + " quality stretches" : "")));
  });
  const selection = svg("rect", { class: "selection", y: margin.top, height: height - margin.top - margin.bottom, width: 0, x: 0 });
  root.append(selection);
  enableZoom(root, selection, width, margin, answer);
  chart.replaceChildren(root);
  document.getElementById("trend-legend").replaceChildren(...legend);
  document.getElementById("trend-status").textContent = "from " + new Date(answer.from * 1000).toLocaleString() + " to " +
    new Date(answer.to * 1000).toLocaleString();
}

function enableZoom(root, selection, width, margin, answer) {
  let startX = null;
  const toX = event => {
    const box = root.getBoundingClientRect();
    return (event.clientX - box.left) * width / box.width;
  };
  const toTime = px => answer.from + (px - margin.left) / (width - margin.left - margin.right) * (answer.to - answer.from);
  root.addEventListener("mousedown", event => { startX = toX(event); selection.setAttribute("x", startX); selection.setAttribute("width", 0); });
  root.addEventListener("mousemove", event => {
    if (startX === null) return;
    const now = toX(event);
    selection.setAttribute("x", Math.min(startX, now));
    selection.setAttribute("width", Math.abs(now - startX));
  });
  root.addEventListener("mouseup", event => {
    if (startX === null) return;
    const endX = toX(event);
    const from = toTime(Math.min(startX, endX)), to = toTime(Math.max(startX, endX));
    startX = null;
    if (Math.abs(endX - (Number(selection.getAttribute("x")))) < 5 && to - from < 1) return;
    if (to - from >= 1) {
      state.trend.zoomed = [from, to];
      document.getElementById("trend-zoom-out").disabled = false;
      loadTrend();
    }
  });
}

/* ------------------------------------------------------------------ pages */

function showPage() {
  state.page = (location.hash || "#overview").slice(1);
  for (const page of document.querySelectorAll(".page")) page.classList.toggle("active", page.id === state.page);
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === state.page);
  if (state.page === "trends" && state.trend) loadTrend();
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", showPage);
  for (const id of ["filter-device", "filter-tag", "filter-quality"]) {
    document.getElementById(id).addEventListener("input", () => state.snapshot && renderPoints());
  }
  document.getElementById("alarms-all").addEventListener("change", () => state.snapshot && renderAlarms());
  for (const button of document.querySelectorAll("#trend-ranges button")) {
    button.addEventListener("click", () => setRange(Number(button.dataset.range)));
  }
  document.getElementById("trend-tags").addEventListener("change", () => state.trend ? loadTrend() : setRange(600));
  document.getElementById("trend-follow").addEventListener("change", event => { if (state.trend) state.trend.follow = event.target.checked; });
  document.getElementById("trend-zoom-out").addEventListener("click", () => setRange(state.trend.range));
  showPage();
  connect();
});
