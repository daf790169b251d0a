// The switchyard dashboard: pages for the supervision tree, plugins, targets, sessions and
// events, drawn with the DOM (no framework, no innerHTML of data) from the HTTP API.

import { api, auth, ApiError, onUnauthorized, stream, subscribe } from "./api.js";
import { hookTotals, LatencyHistory, parseProm, sparkline } from "./metrics.js";

const CONNECTORS = ["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"];
const AUTH_TYPES = ["NONE", "BEARER_TOKEN", "API_KEY", "BASIC_AUTH", "CUSTOM_HEADER"];
const METRICS_EVERY_MS = 3000;

// ---- DOM helpers ------------------------------------------------------------------------------

/** Builds an element: h("div.a.b#id", {attr: v, onclick: f}, children…). */
function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = /^([a-z0-9]+)(.*)$/.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

/** Replaces an element's children (arrays flattened, nulls skipped). */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const badge = (state, text = state) => h(`span.badge.s-${String(state || "unknown").toLowerCase()}`, text || "—");
const json = (value) => h("pre.json", JSON.stringify(value, null, 2));
const ago = (iso) => {
  if (!iso) return "";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(iso).toLocaleString();
};
const ms = (v) => (v === null || v === undefined ? "—" : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);

function toast(text, bad = false) {
  const el = h(`div.toast${bad ? ".bad" : ""}`, { role: "status" }, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 7000 : 3500);
}

/** Runs an action, showing its error as a toast; returns its result or undefined. */
async function attempt(action, what) {
  try {
    return await action();
  } catch (e) {
    toast(`${what}: ${e.message}${e.code && e.code !== e.message ? ` (${e.code})` : ""}`, true);
    return undefined;
  }
}

// ---- Shared state: the live event stream, the tree, metrics ---------------------------------------

const listeners = new Set();
let events = null;
const history = new LatencyHistory(40);
let metricsTimer = null;
let healthTimer = null;

function startEventStream() {
  if (events) events.close();
  const status = document.getElementById("stream-status");
  events = subscribe("*", (e) => {
    if (e.event === "stream.closed" || e.event === "stream.dropped") return;
    for (const listener of listeners) listener(e.data && e.data.event ? e.data : { event: e.event, data: e.data });
  }, (state) => {
    status.textContent = `events: ${state}`;
    status.className = `pill s-${state === "live" ? "live" : state === "down" ? "fail" : "connecting"}`;
  });
}

async function pollMetrics() {
  clearTimeout(metricsTimer);
  try {
    history.add(hookTotals(parseProm(await api.text("/metrics"))));
    for (const draw of sparkViews) draw();
  } catch (e) { if (e.status === 401) return; }
  metricsTimer = setTimeout(pollMetrics, METRICS_EVERY_MS);
}
const sparkViews = new Set();

async function pollHealth() {
  clearTimeout(healthTimer);
  const el = document.getElementById("health-status");
  try {
    const res = await fetch("/health");
    const body = await res.json();
    el.textContent = `health: ${body.status}`;
    el.className = `pill s-${body.status}`;
  } catch {
    el.textContent = "health: unreachable";
    el.className = "pill s-fail";
  }
  healthTimer = setTimeout(pollHealth, 5000);
}

// ---- Auth ----------------------------------------------------------------------------------

let needsLogin = false;

function drawAuth() {
  const el = document.getElementById("auth-status");
  fill(el);
  if (auth.token) {
    el.append(h("span", "admin token set"), h("button#logout", {
      onclick: () => { auth.set(""); location.hash = "#/overview"; location.reload(); },
    }, "Sign out"));
  }
}

function loginPage(main) {
  const status = document.getElementById("stream-status");
  status.textContent = "events: signed out";
  status.className = "pill muted";
  const input = h("input#token", { type: "password", placeholder: "admin token", autocomplete: "current-password" });
  const error = h("div.form-error#login-error");
  const submit = async (ev) => {
    ev.preventDefault();
    auth.set(input.value.trim());
    try {
      await api.get("/api/plugins");
      needsLogin = false;
      drawAuth();
      startEventStream();
      pollMetrics();
      route();
    } catch (e) {
      auth.set("");
      error.textContent = e.status === 401 ? "That token was refused." : e.message;
    }
  };
  main.append(h("form.panel.login#login", { onsubmit: submit },
    h("h1", "Sign in"),
    h("p", "This gateway is protected by an admin token (server.admin_token or SWITCHYARD_ADMIN_TOKEN). Enter it to use the dashboard; it is kept in this tab's session storage only, and sent only to this gateway."),
    error,
    h("div.field", h("label", { for: "token" }, "Admin token"), input),
    h("button.primary#login-submit", { type: "submit" }, "Sign in")));
  setTimeout(() => input.focus(), 0);
}

onUnauthorized(() => {
  if (needsLogin) return;
  needsLogin = true;
  if (events) events.close();
  route();
});

// ---- Router ----------------------------------------------------------------------------------

let cleanup = [];
function onCleanup(f) { cleanup.push(f); }

function route() {
  for (const f of cleanup) f();
  cleanup = [];
  listeners.clear();
  sparkViews.clear();
  const main = document.getElementById("main");
  fill(main);
  const [page = "overview", ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (needsLogin) return loginPage(main);
  const pages = { overview, plugins, targets, sessions, events: eventLog };
  (pages[page] || overview)(main, ...args);
}

// ---- Overview: the supervision tree and latency ---------------------------------------------------

function overview(main) {
  const cards = h("div.cards");
  const tree = h("ul.tree#tree");
  const sparks = h("div.sparks#sparks");
  main.append(
    h("h1", "Overview"),
    cards,
    h("div.grid.two",
      h("section.panel", h("div.row", h("h2", "Supervision tree"), h("span.spacer"),
        h("span.muted.small", "live from the event stream")), tree),
      h("section.panel", h("h2", "Hook latency per plugin"),
        h("p.muted.small", `Mean time of each plugin's hook calls per ${METRICS_EVERY_MS / 1000} s, from /metrics.`), sparks)));

  let plugins = new Map();
  let flash = new Set();
  async function refresh() {
    const [root, list, health] = await Promise.all([
      api.get("/api/actors"), api.get("/api/plugins"),
      fetch("/health").then((r) => r.json()).catch(() => null),
    ]);
    plugins = new Map(list.map((p) => [p.id, p]));
    drawCards(cards, list, health);
    fill(tree, drawNode(root, plugins, refresh, flash));
    flash = new Set();
  }
  let pending = null;
  listeners.add((e) => {
    if (!/^(plugin|session|actor|supervisor)\./.test(e.event)) return;
    const id = e.data && (e.data.plugin || e.data.pluginId || e.data.id);
    if (id) flash.add(id);
    clearTimeout(pending);
    pending = setTimeout(() => attempt(refresh, "Refreshing the tree"), 60);
  });
  // Mailbox depths change without events: a slow refresh keeps them honest.
  const slow = setInterval(() => attempt(refresh, "Refreshing the tree"), 10000);
  // Uptimes count on between refreshes.
  const tick = setInterval(() => {
    for (const el of tree.querySelectorAll(".uptime")) el.textContent = uptime((Date.now() - Number(el.dataset.since)) / 1000);
  }, 1000);
  onCleanup(() => { clearInterval(slow); clearInterval(tick); clearTimeout(pending); });
  attempt(refresh, "Loading the tree");
  const drawSparks = () => drawSparkList(sparks, [...plugins.keys()]);
  sparkViews.add(drawSparks);
  drawSparks();
}

function drawCards(cards, list, health) {
  const running = list.filter((p) => p.state === "running").length;
  const sessions = health && health.checks && health.checks["sessions:count"];
  const open = sessions && sessions[0] ? sessions[0].observedValue : null;
  const card = (label, value, cls = "") => h("div.card", h("div.label", label), h(`div.value${cls}`, value));
  fill(cards, 
    card("Health", health ? badge(health.status) : "—"),
    card("Plugins running", `${running} / ${list.length}`),
    card("Sessions open", open === null || open === undefined ? "—" : String(open)),
    card("Version", health ? health.version : "—"));
}

function drawNode(node, plugins, refresh, flash) {
  const state = node.state || (node.status === "pass" ? "running" : node.status);
  const plugin = node.role === "plugin" ? plugins.get(node.id) : null;
  const row = h("div.node-row",
    h(`span.dot.s-${state || "unknown"}`),
    h("span.node-id", node.id),
    node.role ? h("span.node-role", node.role) : null,
    state ? h(`span.badge.state.s-${state}`, state) : null,
    h("span.node-meta",
      node.restarts !== undefined ? h("span.restarts", { title: "restarts" }, `↻ ${node.restarts}`) : null,
      node.generation !== undefined ? h("span", { title: "generation" }, `gen ${node.generation}`) : null,
      node.mailbox ? mailbox(node.mailbox) : null,
      node.uptimeS !== undefined ? h("span.uptime", { title: `started ${node.startedAt || ""}`, "data-since": String(Date.now() - node.uptimeS * 1000) }, uptime(node.uptimeS)) : null),
    plugin ? pluginActions(plugin, refresh) : null,
    node.lastError ? h("div.node-error", { title: `${node.lastError.message} (${node.lastError.at})` },
      `last error: ${node.lastError.message}`) : null);
  const li = h("li.node", { "data-path": node.path, "data-state": state || "" }, row);
  if (plugin && flash.has(plugin.id)) li.classList.add("flash");
  if (node.children && node.children.length) li.append(h("ul", node.children.map((c) => drawNode(c, plugins, refresh, flash))));
  return li;
}

function uptime(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `up ${s}s`;
  if (s < 3600) return `up ${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `up ${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `up ${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function mailbox(m) {
  const bar = h("span");
  bar.style.width = `${m.capacity ? Math.min(100, (100 * m.depth) / m.capacity) : 0}%`;
  return h("span.mailbox", { title: `mailbox: ${m.depth}/${m.capacity}, high water ${m.highWater}, dropped ${m.dropped}` },
    "✉", h("span.meter", bar), `${m.depth}/${m.capacity}`);
}

/** The operator's buttons for a plugin: reload and unload (scripts), restart, disable/enable. */
function pluginActions(plugin, after) {
  const act = (action, label, method = "post", extra = "") => h(`button.mini${extra}`, {
    "data-action": action, "data-plugin": plugin.id, title: `${label} ${plugin.id}`,
    onclick: async (ev) => {
      const button = ev.currentTarget;
      if (action === "unload" && !button.classList.contains("armed")) {
        button.classList.add("armed");
        button.textContent = "confirm unload";
        setTimeout(() => { button.classList.remove("armed"); button.textContent = label; }, 4000);
        return;
      }
      button.disabled = true;
      const path = `/api/plugins/${encodeURIComponent(plugin.id)}${action === "unload" ? "" : `/${action}`}`;
      // The API answers once the action is over (a restart: once the plugin runs again); the
      // states it passes through meanwhile publish no event, so they are polled for.
      const watch = after ? setInterval(() => attempt(after, "Refreshing"), 200) : null;
      const done = await attempt(() => (method === "del" ? api.del(path) : api.post(path)), `${label} ${plugin.id}`);
      clearInterval(watch);
      if (done !== undefined) toast(`${plugin.id}: ${label.toLowerCase()} done`);
      button.disabled = false;
      if (after) attempt(after, "Refreshing");
    },
  }, label);
  const script = plugin.source !== "native";
  return h("span.node-actions",
    script ? act("reload", "Reload") : null,
    act("restart", "Restart"),
    plugin.state === "disabled" ? act("enable", "Enable") : act("disable", "Disable"),
    script ? act("unload", "Unload", "del", ".danger") : null);
}

function drawSparkList(el, ids) {
  const known = [...new Set([...ids, ...history.series.keys()])].sort();
  if (!known.length) { fill(el, h("div.empty", "No plugins.")); return; }
  fill(el, ...known.map((id) => {
    const series = history.series.get(id) || [];
    return h("div.spark", { "data-plugin": id },
      h("span.name", { title: id }, id),
      sparkline(series, series.length),
      h("span.last", series.length ? ms(history.latest(id)) : "no calls"));
  }));
}

// ---- Plugins -------------------------------------------------------------------------------

async function plugins(main, selected) {
  const list = h("tbody");
  const detail = h("section.panel#plugin-detail", h("div.empty", "Select a plugin to see its metadata, config schema and registrations."));
  const orderSelect = h("select#order-connector", { onchange: () => drawOrder() }, CONNECTORS.map((c) => h("option", { value: c }, c)));
  const order = h("ol#order");
  main.append(h("h1", "Plugins"),
    h("div.grid.two",
      h("div",
        h("section.panel", h("table#plugins", h("thead", h("tr", ["Plugin", "Version", "Source", "Priority", "State", "Latency"].map((t) => h("th", t)))), list)),
        h("section.panel", h("div.row", h("h2", "Pipeline order"), h("span.spacer"), orderSelect),
          h("p.muted.small", "Compatible plugins in the order their beforeSend hooks run (afterReceive runs the same order)."), order)),
      detail));

  let all = [];
  async function load() {
    all = await api.get("/api/plugins");
    fill(list, ...all.map((p) => {
      const cell = h("td.spark-cell");
      return h(`tr.clickable${p.id === selected ? ".selected" : ""}`, { "data-plugin": p.id, onclick: () => { location.hash = `#/plugins/${encodeURIComponent(p.id)}`; } },
        h("td", h("strong", p.name), h("div.muted.small.mono", p.id)),
        h("td", p.version), h("td", p.source), h("td", String(p.priority)),
        h("td", badge(p.state)), cell);
    }));
    drawTableSparks();
    if (selected) await drawDetail(selected);
  }
  function drawTableSparks() {
    for (const row of list.querySelectorAll("tr")) {
      const id = row.dataset.plugin;
      const series = history.series.get(id) || [];
      fill(row.lastChild, sparkline(series, series.length, 90, 22), " ", h("span.small.muted", ms(history.latest(id))));
    }
  }
  sparkViews.add(drawTableSparks);

  async function drawDetail(id) {
    const [p, { routes }, { tools }, { agents }] = await Promise.all([
      api.get(`/api/plugins/${encodeURIComponent(id)}`), api.get("/api/routes"), api.get("/api/tools"), api.get("/api/agents"),
    ]);
    const mine = (x) => x.plugin === id || (x.source && x.source.id === id);
    const schema = p.configSchema || [];
    fill(detail, 
      h("div.row", h("h2", p.name), badge(p.state), h("span.spacer"), pluginActions(p, load)),
      h("p", p.description || h("span.muted", "No description.")),
      h("table.kv", h("tbody",
        [["Id", h("code", p.id)], ["Version", p.version], ["Source", p.source], ["Priority", String(p.priority)],
          ["Connectors", p.compatibleConnectors.join(", ") || "—"], ["Host API", p.hostApi],
          ["Dependencies", p.dependencies.map((d) => `${d.id} ${d.version}`).join(", ") || "—"],
          ["Restarts / reloads", `${p.restarts} / ${p.reloads}`], ["Generation", String(p.generation)],
          ["Last error", p.lastError ? `${p.lastError.message} (${ago(p.lastError.at)})` : "—"]]
          .map(([k, v]) => h("tr", h("th", k), h("td", v))))),
      h("h3", "Config schema"),
      schema.length ? h("table", h("thead", h("tr", ["Key", "Type", "Required", "Default", "Description"].map((t) => h("th", t)))),
        h("tbody", schema.map((f) => h("tr", h("td", h("code", f.key)), h("td", f.type + (f.options ? `: ${f.options.map((o) => o.value).join(" | ")}` : "")),
          h("td", f.required ? "yes" : ""), h("td", f.default === undefined ? "" : JSON.stringify(f.default)), h("td", f.description || f.label)))))
        : h("div.empty", "No configuration."),
      h("h3", "Registrations"),
      registrations("Routes", routes.filter(mine).map((r) => `${r.method} ${r.path}${r.public ? " (public)" : ""}`)),
      registrations("Tools", tools.filter(mine).map((t) => `${t.name} — ${t.description}`)),
      registrations("Agents", agents.filter(mine).map((a) => `${a.id} (${a.displayName})`)),
      p.script ? [h("h3", "Script"), json(p.script)] : null);
  }
  function registrations(title, items) {
    return h("div.field", h("label", title), items.length ? h("ul", items.map((i) => h("li.mono", i))) : h("div.muted.small", "none"));
  }
  async function drawOrder() {
    const result = await attempt(() => api.get(`/api/plugins/order?connector=${orderSelect.value}`), "Pipeline order");
    if (!result) return;
    fill(order, ...(result.plugins.length
      ? result.plugins.map((p) => h("li", h("strong", p.id), h("span.muted.small", `  priority ${p.priority}`)))
      : [h("li.empty", "No compatible plugin.")]));
  }
  listeners.add((e) => { if (e.event.startsWith("plugin.")) attempt(load, "Refreshing plugins"); });
  await attempt(load, "Loading plugins");
  drawOrder();
}

// ---- Targets -----------------------------------------------------------------------------------

function targets(main, id, mode) {
  if (id === "new") return targetForm(main, null);
  if (id && mode === "edit") return targetForm(main, id);
  const body = h("tbody");
  const result = h("div#test-result");
  main.append(h("div.row", h("h1", "Targets"), h("span.spacer"),
    h("a.button#new-target", { href: "#/targets/new" }, "New target")),
  h("section.panel", h("table#targets", h("thead", h("tr", ["Target", "Connector", "Endpoint", "Source", "Last test", ""].map((t) => h("th", t)))), body)),
  result);
  async function load() {
    const list = await api.get("/api/targets");
    if (!list.length) { fill(body, h("tr", h("td", { colspan: 6 }, h("div.empty", "No targets yet.")))); return; }
    fill(body, ...list.map((t) => h("tr", { "data-target": t.id },
      h("td", h("strong", t.name), h("div.muted.small.mono", t.id)),
      h("td", t.connectorType), h("td.mono.small", t.endpoint), h("td", t.source),
      h("td", t.lastTest ? [badge(t.lastTest.ok ? "ok" : "fail"), " ", h("span.small.muted", ago(t.lastTest.testedAt))] : h("span.muted", "never")),
      h("td", h("div.row",
        h("button.mini", { "data-action": "test", onclick: () => test(t.id) }, "Test"),
        t.source === "api" ? h("a.button.mini", { href: `#/targets/${encodeURIComponent(t.id)}/edit`, "data-action": "edit" }, "Edit") : null,
        t.source === "api" ? h("button.mini.danger", { "data-action": "delete", onclick: (ev) => remove(ev, t.id) }, "Delete") : null)))));
  }
  async function test(tid) {
    fill(result, h("section.panel", h("h2", `Testing ${tid}…`)));
    const r = await attempt(() => api.post(`/api/targets/${encodeURIComponent(tid)}/test`, {}), `Test ${tid}`);
    if (!r) { fill(result); return; }
    fill(result, h("section.panel#test-panel", h("div.row", h("h2", `Test of ${tid}`), badge(r.ok ? "ok" : "fail")),
      r.message && r.message.content !== undefined ? h("p", "Answer: ", h("strong", String(r.message.content))) : null,
      r.error ? h("p.field-error", r.error) : null, json(r)));
    load();
  }
  async function remove(ev, tid) {
    const button = ev.currentTarget;
    if (!button.classList.contains("armed")) { button.classList.add("armed"); button.textContent = "confirm"; return; }
    if (await attempt(() => api.del(`/api/targets/${encodeURIComponent(tid)}`), `Delete ${tid}`) !== undefined) toast(`Deleted ${tid}`);
    load();
  }
  attempt(load, "Loading targets");
}

/** A field: label, control, hint, and the place its error is shown. */
function field(path, label, control, { hint, required, wide, check } = {}) {
  control.dataset.path = path;
  if (!control.id) control.id = `f-${path.replace(/[^a-zA-Z0-9]+/g, "-")}`;
  const labelEl = h("label", { for: control.id }, check ? control : null, label, required ? h("span.req", " *") : null);
  return h(`div.field${wide ? ".wide" : ""}${check ? ".check" : ""}`, { "data-field": path },
    labelEl, check ? null : control, hint ? h("div.hint", hint) : null, h("div.field-error", { "data-error-for": path }));
}

/** The form controls of one Krawall config field (string, number, boolean, select, json). */
function configControl(f, value) {
  const v = value === undefined ? f.default : value;
  switch (f.type) {
    case "number": return h("input", { type: "number", step: "any", value: v === undefined || v === null ? "" : String(v) });
    case "boolean": return h("input", { type: "checkbox", checked: v === true });
    case "select": return h("select", !f.required ? h("option", { value: "" }, "—") : null,
      (f.options || []).map((o) => h("option", { value: o.value, selected: o.value === v }, o.label || o.value)));
    case "json": return h("textarea", { rows: 3, value: v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v, null, 2) });
    default: return h("input", { type: f.secret ? "password" : "text", value: v === undefined || v === null ? "" : String(v) });
  }
}

/** Reads a config field's control back: undefined when left empty. */
function configValue(f, control) {
  switch (f.type) {
    case "boolean": return control.checked;
    case "number": {
      if (control.value === "") return undefined;
      const n = Number(control.value);
      return Number.isNaN(n) ? control.value : n;
    }
    default: return control.value === "" ? undefined : control.value;
  }
}

async function targetForm(main, id) {
  const [plugins, existing] = await Promise.all([
    attempt(() => api.get("/api/plugins"), "Loading plugins"),
    id ? attempt(() => api.get(`/api/targets/${encodeURIComponent(id)}`), "Loading the target") : null,
  ]);
  const pluginList = plugins || [];
  if (id && !existing) return;
  const t = existing || {
    id: "", name: "", connectorType: "HTTP_REST", endpoint: "", authType: "NONE", authConfig: {},
    requestTemplate: { messagePath: "message" }, responseTemplate: { responsePath: "reply" }, protocolConfig: {}, timeoutMs: 30000, plugins: [],
  };
  const readOnly = existing && existing.source === "config";
  const formError = h("div.form-error#form-error", { role: "alert" });
  const input = (value, attrs = {}) => h("input", { type: "text", value: value === undefined || value === null ? "" : String(value), ...attrs });
  const select = (options, value) => h("select", options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const area = (value) => h("textarea", { rows: 3, value: value && Object.keys(value).length ? JSON.stringify(value, null, 2) : "" });
  const c = {
    id: input(t.id, { placeholder: "generated when empty", disabled: !!existing }),
    name: input(t.name, { placeholder: "My chatbot" }),
    connectorType: select(CONNECTORS, t.connectorType),
    endpoint: input(t.endpoint, { placeholder: "http://host:port/path" }),
    authType: select(AUTH_TYPES, t.authType),
    authConfig: area(t.authConfig),
    messagePath: input(t.requestTemplate.messagePath),
    responsePath: input(t.responseTemplate.responsePath),
    errorPath: input(t.responseTemplate.errorPath),
    tokenUsagePath: input(t.responseTemplate.tokenUsagePath),
    protocolConfig: area(t.protocolConfig),
    timeoutMs: h("input", { type: "number", min: 1, value: String(t.timeoutMs || 30000) }),
  };
  const stages = h("div#stages");
  const addSelect = h("select#add-plugin");
  const fillAdd = () => fill(addSelect, h("option", { value: "" }, "Add a plugin…"),
    pluginList.filter((p) => p.compatibleConnectors.includes(c.connectorType.value)).map((p) => h("option", { value: p.id }, `${p.name} (${p.id})`)));
  c.connectorType.addEventListener("change", fillAdd);
  fillAdd();
  const entries = [];
  async function addStage(ref) {
    const detail = await attempt(() => api.get(`/api/plugins/${encodeURIComponent(ref.id)}/config-schema`), `Config schema of ${ref.id}`);
    const schema = (detail && detail.configSchema) || [];
    const entry = { id: ref.id, schema, controls: new Map(), critical: h("input", { type: "checkbox", checked: !!ref.critical }), ref };
    const index = entries.length;
    entries.push(entry);
    const fields = schema.map((f) => {
      const control = configControl(f, ref.config ? ref.config[f.key] : undefined);
      entry.controls.set(f.key, control);
      return field(`plugins[${index}].config.${f.key}`, f.label || f.key, control,
        { hint: f.description, required: f.required, check: f.type === "boolean", wide: f.type === "json" });
    });
    const el = h("div.stage", { "data-stage": ref.id, "data-field": `plugins[${index}]` },
      h("div.stage-head", h("strong", ref.id), h("span.muted.small", schema.length ? `${schema.length} config field(s)` : "no config"),
        h("span.spacer"), h("label.small.row", entry.critical, "critical"),
        h("button.mini.danger", { type: "button", onclick: () => { entry.removed = true; el.remove(); } }, "Remove")),
      h("div.form-grid", fields),
      h("div.field-error", { "data-error-for": `plugins[${index}]` }));
    entry.el = el;
    stages.append(el);
  }
  for (const ref of t.plugins || []) await addStage(ref);
  addSelect.addEventListener("change", () => { if (addSelect.value) addStage({ id: addSelect.value }); addSelect.value = ""; });

  const save = h("button.primary#save-target", { type: "submit", disabled: readOnly }, existing ? "Save changes" : "Create target");
  const form = h("form.panel#target-form", { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); submit(); } },
    readOnly ? h("p.form-error", "This target is declared in the settings and is read-only here.") : null,
    formError,
    h("div.form-grid",
      field("id", "Id", c.id, { hint: existing ? "An id cannot change." : "Letters, digits, - and _; a fresh one when empty." }),
      field("name", "Name", c.name, { required: true }),
      field("connectorType", "Connector", c.connectorType, { required: true }),
      field("endpoint", "Endpoint", c.endpoint, { required: true, hint: "http(s):// (ws(s):// for WEBSOCKET)" }),
      field("requestTemplate.messagePath", "Message path", c.messagePath, { required: true, hint: "Where the message goes in the request body." }),
      field("responseTemplate.responsePath", "Response path", c.responsePath, { required: true, hint: "Where the answer is, e.g. choices[0].message.content" }),
      field("responseTemplate.errorPath", "Error path", c.errorPath),
      field("responseTemplate.tokenUsagePath", "Token usage path", c.tokenUsagePath),
      field("authType", "Authentication", c.authType),
      field("timeoutMs", "Timeout (ms)", c.timeoutMs),
      field("authConfig", "Credentials (JSON)", c.authConfig, { hint: "token, apiKey + headerName, username + password, or headers. Shown masked; send ******** back to keep." }),
      field("protocolConfig", "Protocol options (JSON)", c.protocolConfig, { hint: "e.g. {\"stream\": true}, method, headers, path" })),
    h("h3", "Pipeline"),
    h("p.muted.small", "Plugins of this target's sessions, each with its config form from the plugin's configSchema."),
    stages, h("div.add-row", addSelect),
    h("div.row.submit-row", save, h("a.button", { href: "#/targets" }, "Cancel")));
  main.append(h("h1", existing ? `Edit target ${existing.id}` : "New target"), form);

  function clearErrors() {
    formError.textContent = "";
    for (const el of form.querySelectorAll("[data-error-for]")) el.textContent = "";
    for (const el of form.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
  }
  /** Shows `message` at the field for `path`, or the nearest enclosing one, or the form. */
  function showError(path, message) {
    let at = path;
    while (at) {
      const el = form.querySelector(`[data-error-for="${CSS.escape(at)}"]`);
      if (el) {
        el.textContent = el.textContent ? `${el.textContent}; ${message}` : message;
        const fieldEl = el.closest(".field");
        if (fieldEl) fieldEl.classList.add("invalid");
        return;
      }
      at = at.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
      if (at === path) break;
    }
    formError.textContent = formError.textContent ? `${formError.textContent} ${message}` : message;
  }
  function parseJson(path, control) {
    if (!control.value.trim()) return {};
    try { return JSON.parse(control.value); } catch (e) { showError(path, `must be valid JSON (${e.message})`); return null; }
  }
  async function submit() {
    clearErrors();
    let ok = true;
    const authConfig = parseJson("authConfig", c.authConfig);
    const protocolConfig = parseJson("protocolConfig", c.protocolConfig);
    if (authConfig === null || protocolConfig === null) ok = false;
    const live = entries.map((e, i) => ({ e, i })).filter(({ e }) => !e.removed);
    const refs = [];
    // Each plugin's config is checked by its own validator first, so errors land at the fields.
    for (const { e, i } of live) {
      const config = {};
      for (const f of e.schema) {
        const v = configValue(f, e.controls.get(f.key));
        if (v !== undefined) config[f.key] = v;
      }
      const check = await attempt(() => api.post(`/api/plugins/${encodeURIComponent(e.id)}/validate-config`, config), `Validating ${e.id}`);
      if (check && !check.valid) {
        ok = false;
        for (const message of check.errors) {
          const key = /^Field '([^']+)'/.exec(message);
          showError(key ? `plugins[${i}].config.${key[1]}` : `plugins[${i}]`, message);
        }
      }
      refs.push({ index: i, ref: { ...(e.ref.priority !== undefined ? { priority: e.ref.priority } : {}), ...(e.ref.timeoutMs !== undefined ? { timeoutMs: e.ref.timeoutMs } : {}), id: e.id, config, critical: e.critical.checked } });
    }
    if (!ok) {
      formError.textContent = "Some fields need attention: see the messages below.";
      revealFirstError();
      return;
    }
    // The API numbers plugins by their place in the body: map them back to the form's blocks.
    const indexOf = refs.map((r) => r.index);
    const body = {
      name: c.name.value, connectorType: c.connectorType.value, endpoint: c.endpoint.value,
      authType: c.authType.value, authConfig, protocolConfig,
      requestTemplate: { ...(existing ? existing.requestTemplate : {}), messagePath: c.messagePath.value },
      responseTemplate: { ...(existing ? existing.responseTemplate : {}), responsePath: c.responsePath.value,
        errorPath: c.errorPath.value || undefined, tokenUsagePath: c.tokenUsagePath.value || undefined },
      timeoutMs: Number(c.timeoutMs.value) || undefined,
      plugins: refs.map((r) => r.ref),
    };
    if (existing && existing.tls) body.tls = existing.tls;
    if (c.id.value.trim()) body.id = c.id.value.trim();
    save.disabled = true;
    try {
      const saved = existing
        ? await api.put(`/api/targets/${encodeURIComponent(existing.id)}`, body)
        : await api.post("/api/targets", body);
      toast(`Target ${saved.id} saved`);
      location.hash = "#/targets";
    } catch (e) {
      showApiError(e, indexOf);
      revealFirstError();
    } finally {
      save.disabled = readOnly;
    }
  }
  function revealFirstError() {
    const first = form.querySelector(".field.invalid") || formError;
    first.scrollIntoView({ block: "center" });
  }
  /** The API's answer {code, message, details: {field, errors}} at the fields it names. */
  function showApiError(e, indexOf) {
    formError.textContent = `${e.message}${e.code ? ` (${e.code})` : ""}`;
    const details = e.details || {};
    const errors = Array.isArray(details.errors) ? details.errors : [];
    if (!errors.length && details.field) showError(String(details.field), e.message);
    for (const item of errors) {
      const text = typeof item === "string" ? item : item.message || JSON.stringify(item);
      const at = typeof item === "object" && item.field ? item.field : (/^([^\s:]+):\s*(.*)$/.exec(text) || [])[1];
      const message = typeof item === "object" ? text : (/^([^\s:]+):\s*(.*)$/.exec(text) || [null, null, text])[2];
      if (!at) { showError("", text); continue; }
      let path = at.replace(/^(target|targets\[\d+\])\.?/, "");
      path = path.replace(/^plugins\[(\d+)\]/, (_, n) => `plugins[${indexOf[Number(n)] ?? n}]`);
      const key = /^Field '([^']+)'/.exec(message);
      if (/^plugins\[\d+\](\.config)?$/.test(path) && key) path = `${path.replace(/\.config$/, "")}.config.${key[1]}`;
      showError(path, message);
    }
  }
}

// ---- Sessions -----------------------------------------------------------------------------------

async function sessions(main, id) {
  if (id) return sessionView(main, id);
  const targetSelect = h("select#session-target");
  const list = h("tbody");
  const open = h("form.panel#open-session", { onsubmit: async (ev) => {
    ev.preventDefault();
    const s = await attempt(() => api.post("/api/sessions", { targetId: targetSelect.value }), "Opening a session");
    if (s) location.hash = `#/sessions/${encodeURIComponent(s.id)}`;
  } }, h("h2", "Open a session"),
  field("targetId", "Target", targetSelect, { hint: "The target's own pipeline is used." }),
  h("button.primary#open-session-submit", { type: "submit" }, "Open session"));
  main.append(h("h1", "Sessions"), h("div.grid.side", open,
    h("section.panel", h("h2", "Sessions"), h("table#sessions", h("thead", h("tr", ["Session", "Target", "State", "Messages", "Created"].map((t) => h("th", t)))), list))));
  const targetsList = (await attempt(() => api.get("/api/targets"), "Loading targets")) || [];
  fill(targetSelect, ...targetsList.map((t) => h("option", { value: t.id }, `${t.name} (${t.id})`)));
  async function load() {
    const page = await api.get("/api/sessions?limit=50");
    const items = page.items || [];
    if (!items.length) { fill(list, h("tr", h("td", { colspan: 5 }, h("div.empty", "No sessions yet.")))); return; }
    fill(list, ...items.map((s) => h("tr.clickable", { "data-session": s.id, onclick: () => { location.hash = `#/sessions/${encodeURIComponent(s.id)}`; } },
      h("td.mono.small", s.id), h("td", s.targetId), h("td", badge(s.state)),
      h("td", String(s.messageCount ?? (s.summary ? s.summary.messageCount : ""))), h("td.small", ago(s.createdAt)))));
  }
  listeners.add((e) => { if (e.event.startsWith("session.")) attempt(load, "Refreshing sessions"); });
  attempt(load, "Loading sessions");
}

async function sessionView(main, id) {
  const enc = encodeURIComponent(id);
  const info = await attempt(() => api.get(`/api/sessions/${enc}`), "Loading the session");
  if (!info) { main.append(h("p", h("a", { href: "#/sessions" }, "← Sessions"))); return; }
  const live = info.state === "open" || info.state === "opening";
  const chat = h("div.chat#chat");
  const auditPane = h("div#audit");
  const message = h("input#message", { type: "text", placeholder: live ? "Type a message…" : "This session has ended.", disabled: !live, autocomplete: "off" });
  const streamed = h("input#stream", { type: "checkbox", checked: true });
  const send = h("button.primary#send", { type: "submit", disabled: !live }, "Send");
  const tabs = h("div.tabs",
    h("button.active", { type: "button", "data-tab": "chat", onclick: () => show("chat") }, "Conversation"),
    h("button", { type: "button", "data-tab": "audit", onclick: () => show("audit") }, "Audit"),
    h("button", { type: "button", "data-tab": "info", onclick: () => show("info") }, "Details"));
  const panes = {
    chat: h("div", chat, h("form.composer", { onsubmit: (ev) => { ev.preventDefault(); say(); } }, message, h("label.small.row", streamed, "stream"), send)),
    audit: auditPane,
    info: json(info),
  };
  const body = h("div", panes.chat);
  function show(tab) {
    for (const b of tabs.children) b.classList.toggle("active", b.dataset.tab === tab);
    fill(body, panes[tab]);
    if (tab === "audit") loadAudit();
  }
  main.append(h("p", h("a", { href: "#/sessions" }, "← Sessions")),
    h("div.row", h("h1", "Session ", h("code", id)), badge(info.state), h("span.spacer"),
      live ? h("button.danger#close-session", { onclick: async () => {
        if (await attempt(() => api.del(`/api/sessions/${enc}`), "Closing") !== undefined) { toast("Session closed"); route(); }
      } }, "Close session") : null),
    h("p.muted", `Target ${info.targetId}`, info.plugins && info.plugins.length ? ` · pipeline: ${info.plugins.map((p) => p.plugin || p.id).join(" → ")}` : ""),
    h("section.panel", tabs, body));

  const transcript = await attempt(() => api.get(`/api/sessions/${enc}/messages?limit=500`), "Loading the transcript");
  for (const row of (transcript && transcript.items) || []) {
    if (row.direction === "sent") chat.append(h("div.bubble.user", row.content || ""));
    else if (row.direction === "received") chat.append(h("div.bubble.assistant", row.content || ""));
    else chat.append(h("div.bubble.error", row.error || row.content || "error"));
  }
  if (!chat.children.length) chat.append(h("div.empty#no-messages", live ? "No messages yet: say something." : "No messages."));

  async function say() {
    const text = message.value;
    if (!text.trim()) return;
    message.value = "";
    const empty = chat.querySelector("#no-messages");
    if (empty) empty.remove();
    chat.append(h("div.bubble.user", text));
    const answer = h("div.bubble.assistant.streaming.answer");
    chat.append(answer);
    chat.scrollTop = chat.scrollHeight;
    send.disabled = true;
    let content = "";
    try {
      if (streamed.checked) {
        const plain = await stream("POST", `/api/sessions/${enc}/messages`, { message: text, stream: true }, (e) => {
          if (e.event === "chunk") {
            content += e.data.content;
            answer.textContent = content;
            answer.dataset.chunks = String(Number(answer.dataset.chunks || 0) + 1);
            chat.scrollTop = chat.scrollHeight;
          } else if (e.event === "done") {
            finish(answer, e.data);
          } else if (e.event === "error") {
            fail(answer, new ApiError(0, e.data));
          }
        });
        if (plain) finish(answer, plain);
      } else {
        finish(answer, await api.post(`/api/sessions/${enc}/messages`, { message: text }));
      }
    } catch (e) {
      fail(answer, e);
    } finally {
      answer.classList.remove("streaming");
      send.disabled = false;
      message.focus();
    }
  }
  function finish(answer, reply) {
    answer.textContent = reply.content;
    answer.classList.remove("streaming");
    answer.classList.add("done");
    const hooks = reply.plugins || [];
    const meta = reply.metadata || {};
    const facts = [
      answer.dataset.chunks ? `streamed in ${answer.dataset.chunks} chunks` : "not streamed",
      meta.responseTimeMs !== undefined ? `upstream ${ms(meta.responseTimeMs)}` : null,
      meta.tokenUsage && meta.tokenUsage.totalTokens !== undefined ? `${meta.tokenUsage.totalTokens} tokens` : null,
    ].filter(Boolean);
    answer.after(h("div.answer-meta.small.muted", facts.join(" · ")));
    if (hooks.length) {
      answer.nextSibling.after(h("table.hooks", h("thead", h("tr", ["Plugin", "Hook", "Outcome", "Time", "Error"].map((t) => h("th", t)))),
        h("tbody", hooks.map((o) => h("tr", h("td.mono", o.plugin), h("td", o.hook), h("td", badge(o.outcome)),
          h("td", ms(o.durationMs)), h("td.small", o.error || ""))))));
    }
    chat.scrollTop = chat.scrollHeight;
  }
  function fail(answer, e) {
    answer.className = "bubble error";
    answer.textContent = `${e.message}${e.code ? ` (${e.code})` : ""}`;
  }
  async function loadAudit() {
    const audit = await attempt(() => api.get(`/api/sessions/${enc}/audit`), "Loading the audit");
    const entries = (audit && audit.entries) || [];
    fill(auditPane, entries.length
      ? h("table", h("thead", h("tr", ["Time", "Direction", "Content", "Time taken", "Tokens"].map((t) => h("th", t)))),
        h("tbody", entries.map((e) => h("tr", h("td.small", new Date(e.timestamp).toLocaleTimeString()), h("td", badge(e.direction)),
          h("td", e.message ?? e.responseContent ?? ""), h("td", e.responseTimeMs !== undefined ? ms(e.responseTimeMs) : ""),
          h("td.small.mono", e.tokenUsage ? JSON.stringify(e.tokenUsage) : "")))))
      : h("div.empty", "Nothing audited: the audit plugin records sessions whose pipeline has it."));
  }
}

// ---- Events ----------------------------------------------------------------------------------

function eventLog(main) {
  const pattern = h("input#event-pattern", { type: "text", value: sessionStorage.getItem("switchyard.eventPattern") || "*", placeholder: "plugin.*,session.*" });
  const log = h("div.log#event-log");
  const count = h("span.muted.small#event-count", "0 events");
  const state = h("span.badge", "connecting");
  let paused = false, n = 0, sub = null;
  const pause = h("button", { type: "button", onclick: () => { paused = !paused; pause.textContent = paused ? "Resume" : "Pause"; } }, "Pause");
  main.append(h("h1", "Events"),
    h("section.panel",
      h("form.row", { onsubmit: (ev) => { ev.preventDefault(); connect(); } },
        h("label", { for: "event-pattern" }, "Pattern"), h("span", pattern), h("button.primary#apply-pattern", { type: "submit" }, "Apply"),
        pause, h("button", { type: "button", onclick: () => { fill(log); n = 0; count.textContent = "0 events"; } }, "Clear"),
        h("span.spacer"), state, count),
      h("p.muted.small", "Comma-separated patterns, e.g. plugin.*,session.created; * is everything. Newest first; the last 500 are kept."),
      log));
  function connect() {
    if (sub) sub.close();
    sessionStorage.setItem("switchyard.eventPattern", pattern.value);
    sub = subscribe(pattern.value.trim() || "*", (e) => {
      if (paused) return;
      const env = e.data && e.data.event ? e.data : { event: e.event, data: e.data };
      const ns = env.event.split(".")[0];
      const bad = /failed|error|dropped/.test(env.event);
      const data = h("div.data", { title: JSON.stringify(env.data) }, JSON.stringify(env.data));
      const row = h(`div.ev.ns-${ns}${bad ? ".bad" : ""}`, { "data-event": env.event },
        h("span.time", new Date(env.timestamp || Date.now()).toLocaleTimeString()), h("span.name", env.event), data);
      row.addEventListener("click", () => { data.classList.toggle("open"); fill(data, data.classList.contains("open") ? json(env.data) : JSON.stringify(env.data)); });
      log.prepend(row);
      while (log.children.length > 500) log.lastChild.remove();
      count.textContent = `${++n} events`;
    }, (s, err) => {
      state.className = `badge s-${s === "live" ? "live" : s === "down" ? "fail" : "connecting"}`;
      state.textContent = err && err.status === 400 ? `refused: ${err.message}` : s;
    });
  }
  onCleanup(() => sub && sub.close());
  connect();
}

// ---- Start ---------------------------------------------------------------------------------------

async function start() {
  drawAuth();
  pollHealth();
  try {
    await api.get("/api/plugins");
  } catch (e) {
    if (e.status === 401) { needsLogin = true; route(); window.addEventListener("hashchange", route); return; }
  }
  startEventStream();
  pollMetrics();
  window.addEventListener("hashchange", route);
  route();
}

start();
