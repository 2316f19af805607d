// twinfleet dashboard: one page, hash routes, no framework, nothing loaded from elsewhere.

const TOKEN_KEY = "twinfleet.token";
const API = "/api/v1";
const view = document.getElementById("view");
const streamBadge = document.getElementById("stream");

// -- helpers ---------------------------------------------------------------------------------

/** Build an element: h("td", {class: "num"}, "3"); children may be strings or nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const json = (value) => JSON.stringify(value, null, 2);
const fmtTime = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "—");
const pill = (flag, yes, no) => h("span", { class: `pill ${flag ? "ok" : ""}` }, flag ? yes : no);

class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : null;
    super(err ? err.message : `HTTP ${status}`);
    this.status = status;
    this.code = err ? err.code : "http_error";
    this.field = err ? err.field : null;
  }
}

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

/** fetch() under /api/v1 with the bearer token; JSON in, {status, etag, body} out. */
async function api(path, { method = "GET", body, headers = {}, contentType } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${token()}`, ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = contentType || "application/json";
  }
  const response = await fetch(API + path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    showTokenPrompt("The token was refused: enter another one.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { status: response.status, etag: response.headers.get("ETag"), body: data };
}

const errorBox = (err) => h("div", { class: "error", role: "alert" }, err.message || String(err));

// -- the event stream (fetch + ReadableStream: EventSource cannot send a bearer header) -------

const stream = {
  listeners: new Set(),
  recent: [], // newest first
  arrivals: [], // ms timestamps of the last few seconds, for updates/s
  lastId: null,
  controller: null,
};

function onEvent(listener) {
  stream.listeners.add(listener);
  return () => stream.listeners.delete(listener);
}

function updatesPerSecond() {
  const now = performance.now();
  while (stream.arrivals.length && now - stream.arrivals[0] > 5000) stream.arrivals.shift();
  return stream.arrivals.length / 5;
}

function setBadge(state, text) {
  streamBadge.className = `stream ${state}`;
  streamBadge.textContent = `stream: ${text}`;
}

function dispatch(message) {
  if (!message.data) return;
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  if (message.id) stream.lastId = message.id;
  stream.arrivals.push(performance.now());
  stream.recent.unshift(event);
  if (stream.recent.length > 200) stream.recent.length = 200;
  for (const listener of stream.listeners) listener(event);
}

async function runStream() {
  if (stream.controller) stream.controller.abort();
  const controller = new AbortController();
  stream.controller = controller;
  while (!controller.signal.aborted && token()) {
    try {
      const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
      if (stream.lastId) headers["Last-Event-ID"] = stream.lastId;
      const response = await fetch(`${API}/events`, { headers, signal: controller.signal });
      if (response.status === 401) {
        setBadge("error", "refused");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setBadge("on", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let message = { data: "" };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, "");
          buffer = buffer.slice(nl + 1);
          if (line === "") {
            dispatch(message);
            message = { data: "" };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "data") message.data += (message.data ? "\n" : "") + text;
            else if (field === "id") message.id = text;
            else if (field === "event") message.event = text;
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      setBadge("error", "reconnecting");
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// -- pages -----------------------------------------------------------------------------------

let cleanup = () => {};

function showTokenPrompt(reason) {
  cleanup();
  cleanup = () => {};
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off",
    placeholder: "tf_...", "aria-label": "API token",
  });
  const form = h(
    "form",
    {
      class: "panel token stack",
      onsubmit: (e) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        localStorage.setItem(TOKEN_KEY, value);
        runStream();
        if (location.hash === "#/token" || location.hash === "") location.hash = "#/";
        else route();
      },
    },
    h("h1", {}, "API token"),
    h("p", { class: "muted" }, reason || "Paste a bearer token (twinfleet up writes the admin token to <data-dir>/admin.token)."),
    input,
    h("div", {}, h("button", { type: "submit" }, "Use token"), " ",
      token() ? h("button", { type: "button", class: "secondary", onclick: () => {
        localStorage.removeItem(TOKEN_KEY);
        if (stream.controller) stream.controller.abort();
        setBadge("off", "off");
        input.value = "";
      } }, "Forget token") : null),
  );
  view.replaceChildren(form);
  input.focus();
}

/** Every twin, a page of 1000 at a time (capped, so a huge fleet does not hang the page). */
async function allTwins(query = "") {
  const twins = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const params = new URLSearchParams(query);
    params.set("limit", "1000");
    if (cursor) params.set("cursor", cursor);
    const { body } = await api(`/twins?${params}`);
    twins.push(...body.items);
    cursor = body.next;
    if (!cursor) return { twins, complete: true };
  }
  return { twins, complete: false };
}

async function overviewPage() {
  const rate = h("div", { class: "value", id: "rate" }, "0.0");
  const content = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.replaceChildren(h("h1", {}, "Fleet overview"), content);
  const card = (label, value, id) =>
    h("div", { class: "card" }, h("div", { class: "value", id }, value), h("div", { class: "label" }, label));

  async function refresh() {
    let result;
    try {
      result = await allTwins();
    } catch (err) {
      content.replaceChildren(errorBox(err));
      return;
    }
    const { twins, complete } = result;
    const byType = new Map();
    for (const twin of twins) {
      const type = twin.type || "(none)";
      const row = byType.get(type) || { total: 0, online: 0, anomalous: 0 };
      row.total += 1;
      row.online += twin.connectivity && twin.connectivity.online ? 1 : 0;
      row.anomalous += twin.anomaly && twin.anomaly.anomalous ? 1 : 0;
      byType.set(type, row);
    }
    const sum = (key) => [...byType.values()].reduce((n, row) => n + row[key], 0);
    content.replaceChildren(
      h("div", { class: "cards" },
        card(complete ? "twins" : "twins (first pages)", twins.length, "count-total"),
        card("online", sum("online"), "count-online"),
        card("anomalous", sum("anomalous"), "count-anomalous"),
        h("div", { class: "card" }, rate, h("div", { class: "label" }, "updates/s (event stream)"))),
      h("div", { class: "panel" }, h("h2", {}, "By type"),
        h("table", { id: "by-type" },
          h("thead", {}, h("tr", {}, h("th", {}, "type"), h("th", {}, "twins"), h("th", {}, "online"), h("th", {}, "anomalous"))),
          h("tbody", {}, [...byType.entries()].sort().map(([type, row]) =>
            h("tr", { "data-type": type },
              h("td", {}, h("a", { href: `#/twins?filter=${encodeURIComponent(`type == ${JSON.stringify(type)}`)}` }, type)),
              h("td", { class: "num" }, row.total), h("td", { class: "num" }, row.online),
              h("td", { class: "num" }, row.anomalous)))))),
    );
  }

  const ingest = h("div", { class: "panel", id: "ingest" }, h("h2", {}, "Ingest"),
    h("p", { class: "muted" }, "Measuring…"));
  view.append(ingest);

  async function refreshIngest() {
    let body;
    try {
      ({ body } = await api("/ingest"));
    } catch (err) {
      ingest.replaceChildren(h("h2", {}, "Ingest"), errorBox(err));
      return;
    }
    if (!body.protocols.length) return;  // the first read only starts the measurement
    const seconds = (s) => (s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
    ingest.replaceChildren(h("h2", {}, "Ingest"),
      h("table", { id: "ingest-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "protocol"), h("th", {}, "messages/s"),
          h("th", {}, "lag p50"), h("th", {}, "lag p99"))),
        h("tbody", {}, body.protocols.map((row) =>
          h("tr", { "data-protocol": row.protocol },
            h("td", {}, row.protocol),
            h("td", { class: "num" }, row.messages_per_s.toFixed(1)),
            h("td", { class: "num" }, seconds(row.lag_p50_s)),
            h("td", { class: "num lag-p99" }, seconds(row.lag_p99_s)))))),
      h("p", { class: "muted" }, "lag: from the edge receiving a message to its twin applying it"));
  }

  await refresh();
  await refreshIngest();
  const ticker = setInterval(() => { rate.textContent = updatesPerSecond().toFixed(1); }, 1000);
  const reload = setInterval(refresh, 10000);
  const reloadIngest = setInterval(refreshIngest, 2000);
  return () => { clearInterval(ticker); clearInterval(reload); clearInterval(reloadIngest); };
}

async function twinsPage(params) {
  const filter = params.get("filter") || "";
  const input = h("input", {
    type: "text", id: "filter", name: "filter", value: filter, "aria-label": "filter",
    placeholder: 'reported.temperature > 30 and tags.site == "plant-a"',
  });
  const results = h("div", {});
  const form = h("form", {
    class: "row",
    onsubmit: (e) => {
      e.preventDefault();
      const value = input.value.trim();
      location.hash = value ? `#/twins?filter=${encodeURIComponent(value)}` : "#/twins";
    },
  }, input, h("button", { type: "submit" }, "Filter"));
  view.replaceChildren(h("h1", {}, "Twins"), form, results);

  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const count = h("p", { class: "muted", id: "twin-count" });
  let cursor = null;
  let shown = 0;

  async function load() {
    const query = new URLSearchParams({ limit: "100" });
    if (filter) query.set("filter", filter);
    if (cursor) query.set("cursor", cursor);
    try {
      const { body } = await api(`/twins?${query}`);
      for (const twin of body.items) tbody.append(twinRow(twin));
      shown += body.items.length;
      cursor = body.next;
      more.hidden = !cursor;
      count.textContent = `${shown} twin${shown === 1 ? "" : "s"}${cursor ? " (more available)" : ""}`;
      return true;
    } catch (err) {
      results.replaceChildren(errorBox(err));
      return false;
    }
  }
  more.addEventListener("click", load);
  if (await load()) {
    results.replaceChildren(count, h("table", { id: "twins" },
      h("thead", {}, h("tr", {}, ["id", "type", "online", "anomalous", "version", "reported"].map((t) => h("th", {}, t)))),
      tbody), more);
  }
  return () => {};
}

function twinRow(twin) {
  const reported = Object.entries(twin.reported || {})
    .slice(0, 4).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return h("tr", { "data-twin": twin.id },
    h("td", {}, h("a", { href: `#/twin/${encodeURIComponent(twin.id)}` }, twin.id)),
    h("td", {}, twin.type || ""),
    h("td", {}, pill(twin.connectivity && twin.connectivity.online, "online", "offline")),
    h("td", {}, twin.anomaly && twin.anomaly.anomalous ? h("span", { class: "pill bad" }, "anomalous") : ""),
    h("td", { class: "num" }, twin.version),
    h("td", {}, h("code", {}, reported)));
}

async function twinPage(id) {
  const path = `/twins/${encodeURIComponent(id)}`;
  const title = h("h1", {}, `Twin ${id} `, h("span", { class: "muted", id: "version" }));
  const summary = h("dl", { class: "kv" });
  const reported = h("pre", { id: "reported" });
  const desired = h("pre", { id: "desired" });
  const delta = h("pre", { id: "delta" });
  const firmware = h("pre", { id: "firmware" });
  const connectivity = h("dl", { class: "kv", id: "connectivity" });
  const editor = h("textarea", { id: "desired-editor", "aria-label": "desired merge patch", spellcheck: "false" });
  const editorNote = h("div", { id: "editor-status" });
  const chart = h("canvas", { id: "chart", width: 800, height: 200 });
  const metricSelect = h("select", { id: "metric", "aria-label": "metric" });
  const chartNote = h("p", { class: "muted" });
  const commandStatus = h("div", { id: "command-status" });
  const live = h("span", { class: "muted", id: "live-note" });
  const alarmList = h("div", { id: "alarms" });
  let doc = null;
  let editorBase = null; // the version the editor's patch applies to
  let editorDirty = false;

  function render() {
    title.querySelector("#version").textContent = `version ${doc.version}`;
    summary.replaceChildren(
      h("dt", {}, "type"), h("dd", {}, doc.type || "—"),
      h("dt", {}, "lifecycle"), h("dd", {}, doc.lifecycle),
      h("dt", {}, "tags"), h("dd", {}, h("code", {}, JSON.stringify(doc.tags))),
      h("dt", {}, "anomaly"), h("dd", {}, doc.anomaly.anomalous ? h("span", { class: "pill bad" }, "anomalous") : "normal",
        doc.anomaly.score !== null && doc.anomaly.score !== undefined ? `, score ${Number(doc.anomaly.score).toFixed(3)}` : ""),
      h("dt", {}, "model"), h("dd", { id: "model" }, doc.anomaly.model
        ? `${doc.anomaly.model} ${doc.anomaly.version || ""} (${doc.anomaly.source || "default"})`
        : "none"),
      h("dt", {}, "updated"), h("dd", {}, fmtTime(doc.metadata && doc.metadata.updated)));
    reported.textContent = json(doc.reported);
    desired.textContent = json(doc.desired);
    delta.textContent = json(doc.delta);
    firmware.textContent = json(doc.firmware);
    connectivity.replaceChildren(
      h("dt", {}, "online"), h("dd", {}, pill(doc.connectivity.online, "online", "offline")),
      h("dt", {}, "last seen"), h("dd", {}, fmtTime(doc.connectivity.last_seen)),
      h("dt", {}, "protocol"), h("dd", {}, doc.connectivity.protocol || "—"));
    if (!editorDirty) {
      editor.value = json(doc.desired);
      editorBase = doc.version;
    }
    renderAlarms();
  }

  function renderAlarms() {
    const rows = (doc.alarms || []).slice().reverse(); // newest first
    if (!rows.length) {
      alarmList.replaceChildren(h("p", { class: "muted" }, "No alarms."));
      return;
    }
    alarmList.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["alarm", "severity", "state", "raised", "acknowledged", "cleared", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...rows.map((a) => h("tr", { "data-alarm": a.id },
        h("td", {}, `${a.rule}: ${a.condition}`),
        h("td", {}, h("span", { class: a.severity === "critical" ? "pill bad" : "pill" }, a.severity)),
        h("td", { class: "alarm-state" }, a.state),
        h("td", {}, fmtTime(a.raised_at)),
        h("td", {}, a.acknowledged_by ? `${a.acknowledged_by}, ${fmtTime(a.acknowledged_at)}` : ""),
        h("td", {}, fmtTime(a.cleared_at)),
        h("td", {}, a.state === "active"
          ? h("button", { type: "button", class: "secondary", onclick: () => ackAlarm(a.id) }, "Acknowledge")
          : ""))))));
  }

  async function ackAlarm(alarmId) {
    try {
      await api(`${path}/alarms/${encodeURIComponent(alarmId)}/ack`, { method: "POST" });
      await reload();
    } catch (err) {
      alarmList.prepend(errorBox(err));
    }
  }

  async function reload() {
    const { body } = await api(path);
    doc = body;
    render();
  }

  editor.addEventListener("input", () => { editorDirty = true; });

  async function sendPatch(e) {
    e.preventDefault();
    let patch;
    try {
      patch = JSON.parse(editor.value);
    } catch (err) {
      editorNote.replaceChildren(h("div", { class: "error" }, `Not JSON: ${err.message}`));
      return;
    }
    try {
      const { body } = await api(`${path}/desired`, {
        method: "PATCH", body: patch, contentType: "application/merge-patch+json",
        headers: { "If-Match": `"${editorBase}"` },
      });
      editorDirty = false;
      doc = body;
      render();
      editorNote.replaceChildren(h("span", { class: "notice" }, `Saved: version ${body.version}.`));
    } catch (err) {
      if (err.status === 412) {
        await reload().catch(() => {});
        editorNote.replaceChildren(h("div", { class: "conflict", role: "alert", id: "conflict" },
          `Conflict: the twin changed since version ${editorBase} (now ${doc.version}). `,
          "Your edit was not applied. ",
          h("button", { type: "button", class: "secondary", onclick: () => {
            editorDirty = false;
            render();
            editorNote.replaceChildren();
          } }, "Discard my edit and reload"), " ",
          h("button", { type: "button", class: "secondary", onclick: () => {
            editorBase = doc.version;
            editorNote.replaceChildren(h("span", { class: "muted" }, `Your edit now applies to version ${doc.version}: send it again.`));
          } }, "Keep my edit")));
      } else {
        editorNote.replaceChildren(errorBox(err));
      }
    }
  }

  async function loadTelemetry() {
    try {
      const since = Date.now() / 1000 - 3600; // the last hour
      const [{ body }, { body: anomalies }] = await Promise.all([
        api(`${path}/telemetry?limit=5000&since=${since}`),
        api(`${path}/anomalies?limit=5000&since=${since}`),
      ]);
      const series = new Map();
      for (const p of body.items) {
        if (typeof p.value !== "number") continue;
        if (!series.has(p.metric)) series.set(p.metric, []);
        series.get(p.metric).push(p);
      }
      if (anomalies.scores.length) {
        series.set("anomaly score", anomalies.scores.map((p) => ({ ts: p.ts, value: p.score })));
      }
      const chosen = metricSelect.value;
      const names = [...series.keys()].filter((m) => m !== "anomaly score").sort();
      if (series.has("anomaly score")) names.push("anomaly score"); // after the device's own
      metricSelect.replaceChildren(...names.map((m) => h("option", { value: m }, m)));
      if (chosen && series.has(chosen)) metricSelect.value = chosen;
      drawChart(chart, series.get(metricSelect.value) || []);
      chartNote.textContent = series.size ? `${body.items.length} readings` : "No readings yet.";
    } catch (err) {
      chartNote.textContent = err.message;
      drawChart(chart, []);
    }
  }
  metricSelect.addEventListener("change", loadTelemetry);

  async function sendCommand(e) {
    e.preventDefault();
    const form = e.currentTarget;
    const field = (name) => form.elements.namedItem(name).value;
    let params;
    try {
      params = JSON.parse(field("params") || "{}");
    } catch (err) {
      commandStatus.replaceChildren(h("div", { class: "error" }, `params are not JSON: ${err.message}`));
      return;
    }
    commandStatus.replaceChildren(h("span", { class: "muted" }, "sending…"));
    try {
      let { body } = await api(`${path}/commands`, {
        method: "POST",
        body: { name: field("name"), params, timeout_s: Number(field("timeout")) || 0 },
      });
      showCommand(body);
      for (let i = 0; i < 30 && !["succeeded", "failed", "expired"].includes(body.status); i++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        ({ body } = await api(`${path}/commands/${encodeURIComponent(body.id)}`));
        showCommand(body);
      }
    } catch (err) {
      commandStatus.replaceChildren(errorBox(err));
    }
  }
  function showCommand(record) {
    commandStatus.replaceChildren(
      h("p", {}, "status: ", h("strong", { id: "command-state" }, record.status)),
      h("pre", {}, json(record)));
  }

  view.replaceChildren(
    title,
    h("p", {}, h("a", { href: "#/twins" }, "← twins"), " ", live),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Summary"), summary),
      h("section", { class: "panel" }, h("h2", {}, "Connectivity"), connectivity),
      h("section", { class: "panel" }, h("h2", {}, "Firmware"), firmware)),
    h("section", { class: "panel", style: "margin-top:1rem" }, h("h2", {}, "Alarms"), alarmList),
    h("section", { class: "panel", style: "margin-top:1rem" },
      h("h2", {}, "Telemetry"), h("div", { class: "chart-head" }, metricSelect, chartNote), chart),
    h("div", { class: "grid", style: "margin-top:1rem" },
      h("section", { class: "panel" }, h("h2", {}, "Reported"), reported),
      h("section", { class: "panel" }, h("h2", {}, "Desired"), desired),
      h("section", { class: "panel" }, h("h2", {}, "Delta"), delta)),
    h("div", { class: "grid", style: "margin-top:1rem" },
      h("section", { class: "panel" },
        h("h2", {}, "Edit desired (merge patch)"),
        h("form", { class: "stack", onsubmit: sendPatch }, editor,
          h("div", {}, h("button", { type: "submit", id: "send-patch" }, "Send patch"),
            h("span", { class: "muted" }, " null removes a key; sent with If-Match")),
          editorNote)),
      h("section", { class: "panel" },
        h("h2", {}, "Commands"),
        h("form", { class: "stack", onsubmit: sendCommand },
          h("input", { type: "text", name: "name", placeholder: "name, e.g. reboot", required: true, "aria-label": "command name" }),
          h("textarea", { name: "params", "aria-label": "command params", style: "min-height:4rem" }, "{}"),
          h("label", {}, "wait up to ", h("input", { type: "number", name: "timeout", value: "5", min: "0", max: "300", style: "width:5rem" }), " s "),
          h("button", { type: "submit" }, "Send command")),
        commandStatus)),
  );

  try {
    await reload();
  } catch (err) {
    view.replaceChildren(h("h1", {}, `Twin ${id}`), errorBox(err));
    return () => {};
  }
  loadTelemetry();

  let pending = null;
  const unsubscribe = onEvent((event) => {
    if (event.twin_id !== id) return;
    live.textContent = `last event: ${event.type} #${event.id}`;
    if (event.type === "desired" && event.data && event.data.version > doc.version) {
      doc = { ...doc, version: event.data.version, desired: event.data.desired, delta: event.data.delta };
      render();
    }
    // Refetch once per burst: events carry only part of the document.
    clearTimeout(pending);
    pending = setTimeout(() => reload().catch(() => {}), 250);
  });
  const telemetryTimer = setInterval(loadTelemetry, 15000);
  return () => { unsubscribe(); clearTimeout(pending); clearInterval(telemetryTimer); };
}

function drawChart(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  const height = canvas.clientHeight || 200;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#647084";
  if (points.length === 0) {
    ctx.fillText("no readings", 10, 20);
    return;
  }
  const pad = { left: 48, right: 10, top: 10, bottom: 22 };
  const ts = points.map((p) => p.ts);
  const vs = points.map((p) => p.value);
  let [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  let [v0, v1] = [Math.min(...vs), Math.max(...vs)];
  if (t0 === t1) { t0 -= 1; t1 += 1; }
  if (v0 === v1) { v0 -= 1; v1 += 1; }
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - v0) / (v1 - v0)) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "#dde1e7";
  ctx.beginPath();
  ctx.moveTo(pad.left, pad.top);
  ctx.lineTo(pad.left, height - pad.bottom);
  ctx.lineTo(width - pad.right, height - pad.bottom);
  ctx.stroke();
  ctx.fillText(v1.toPrecision(4), 4, pad.top + 8);
  ctx.fillText(v0.toPrecision(4), 4, height - pad.bottom);
  ctx.fillText(new Date(t0 * 1000).toLocaleTimeString(), pad.left, height - 6);
  const last = new Date(t1 * 1000).toLocaleTimeString();
  ctx.fillText(last, width - pad.right - ctx.measureText(last).width, height - 6);
  ctx.strokeStyle = "#2563eb";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.ts), y(p.value)) : ctx.moveTo(x(p.ts), y(p.value))));
  ctx.stroke();
  ctx.fillStyle = "#2563eb";
  if (points.length < 60) for (const p of points) ctx.fillRect(x(p.ts) - 2, y(p.value) - 2, 4, 4);
}

async function eventsPage() {
  const tbody = h("tbody", {});
  const typeFilter = h("input", { type: "text", id: "event-type", placeholder: "type (e.g. desired, presence)", "aria-label": "event type" });
  const row = (e) => h("tr", { "data-event": e.id },
    h("td", { class: "num" }, e.id), h("td", {}, fmtTime(e.ts)), h("td", {}, e.type),
    h("td", {}, e.twin_id ? h("a", { href: `#/twin/${encodeURIComponent(e.twin_id)}` }, e.twin_id) : ""),
    h("td", {}, h("code", {}, JSON.stringify(e.data))));
  const matches = (e) => !typeFilter.value.trim() || e.type === typeFilter.value.trim();
  const fill = () => tbody.replaceChildren(...stream.recent.filter(matches).map(row));
  typeFilter.addEventListener("input", fill);
  view.replaceChildren(
    h("h1", {}, "Events"),
    h("form", { class: "row", onsubmit: (e) => e.preventDefault() }, typeFilter),
    h("p", { class: "muted" }, "The last 200 events since this page was opened, newest first."),
    h("table", { id: "events" },
      h("thead", {}, h("tr", {}, ["id", "time", "type", "twin", "data"].map((t) => h("th", {}, t)))), tbody));
  fill();
  return onEvent((e) => {
    if (!matches(e)) return;
    tbody.prepend(row(e));
    while (tbody.children.length > 200) tbody.lastChild.remove();
  });
}

// -- routing ---------------------------------------------------------------------------------

let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  cleanup();
  cleanup = () => {};
  const hash = location.hash.replace(/^#/, "") || "/";
  const [pathPart, queryPart = ""] = hash.split("?");
  for (const a of document.querySelectorAll("header nav a")) {
    const target = a.getAttribute("href").slice(1);
    a.classList.toggle("active", target === "/" ? pathPart === "/" : pathPart.startsWith(target.replace(/s$/, "")));
  }
  if (pathPart === "/token" || !token()) {
    showTokenPrompt();
    return;
  }
  let page;
  if (pathPart === "/twins") page = twinsPage(new URLSearchParams(queryPart));
  else if (pathPart.startsWith("/twin/")) page = twinPage(decodeURIComponent(pathPart.slice(6)));
  else if (pathPart === "/events") page = eventsPage();
  else page = overviewPage();
  const stop = await page.catch((err) => {
    view.replaceChildren(errorBox(err));
    return () => {};
  });
  if (seq === routeSeq) cleanup = stop || (() => {});
  else if (stop) stop();
}

window.addEventListener("hashchange", route);
if (token()) runStream();
route();
