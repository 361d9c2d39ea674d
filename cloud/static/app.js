// The groundwatch web app: login, sites list and site page, over the cloud's JSON API.
import { currentLang, setLang, t, term } from "/static/i18n.js";

const main = document.getElementById("main");
const state = { me: null };
window.gw = { chart: null };

// -- helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401 && !path.startsWith("/api/auth/login")) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new HttpError(401, "login needed");
  }
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : null;
  if (!resp.ok) throw new HttpError(resp.status, body?.detail || resp.statusText);
  return body;
}

const enc = encodeURIComponent;

// An optional part of the page (groundwater analysis): null when the receiver has none.
async function optional(path) {
  try { return await api(path); } catch (e) { if (e.status === 401) throw e; return null; }
}

function fmtTime(ts) {
  if (!ts) return "—";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return d.toLocaleString(currentLang() === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: 3, useGrouping: false });
}

function badge(word, cls) {
  return h("span", { class: `badge b-${cls || word}` }, term(word));
}

function message(text, cls = "muted") { return h("p", { class: cls }, text); }

// -- frame --------------------------------------------------------------------------

function renderHeader() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(h("a", { href: "/" }, t("sites")));
  const who = document.getElementById("who");
  const me = state.me;
  who.replaceChildren(me ? (me.auth_enabled
    ? `${me.username} (${term(me.role)})` : t("open_mode")) : "");
  const lang = document.getElementById("lang");
  lang.textContent = t("lang_switch");
  lang.onclick = () => { setLang(currentLang() === "zh" ? "en" : "zh"); route(); };
  const out = document.getElementById("logout");
  out.textContent = t("logout");
  out.hidden = !(me && me.auth_enabled);
  out.onclick = async () => {
    await fetch("/api/auth/logout", { method: "POST", credentials: "same-origin" });
    location.href = "/login";
  };
}

async function route() {
  document.title = "groundwatch";
  const path = location.pathname;
  const error = document.body.dataset.error;
  if (path === "/login") { state.me = null; renderHeader(); return renderLogin(); }
  try {
    state.me = await api("/api/auth/me");
  } catch (e) { return; }
  renderHeader();
  if (error === "forbidden" || error === "not_found") return renderRefused(error);
  const m = path.match(/^\/sites\/([^/]+)$/);
  if (m) return renderSite(decodeURIComponent(m[1]));
  return renderSites();
}

function renderRefused(error) {
  main.replaceChildren(h("section", { class: "card", id: "refused", dataset: { error } },
    h("h1", {}, t(error)), h("a", { href: "/" }, t("back"))));
}

// -- login --------------------------------------------------------------------------

function renderLogin() {
  const err = h("p", { class: "error", id: "login-error" });
  const user = h("input", { name: "username", id: "username", autocomplete: "username",
                            required: true });
  const pass = h("input", { name: "password", id: "password", type: "password",
                            autocomplete: "current-password", required: true });
  const form = h("form", { class: "login card", id: "login-form" },
    h("h1", {}, t("login")),
    h("label", {}, t("username"), h("br"), user),
    h("label", {}, t("password"), h("br"), pass),
    h("button", { class: "act", type: "submit", id: "login-submit" }, t("login")), err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    try {
      await api("/api/auth/login", { json: { username: user.value, password: pass.value } });
      const next = new URLSearchParams(location.search).get("next");
      location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } catch (e) {
      err.textContent = e.status === 401 ? t("login_failed") : `${t("failed")}: ${e.message}`;
    }
  });
  main.replaceChildren(form);
  user.focus();
}

// -- sites list ---------------------------------------------------------------------

async function renderSites() {
  const sites = await api("/api/sites");
  const rows = sites.map((s) => h("tr", { class: "clickable", dataset: { site: s.site },
      onclick: () => { location.href = `/sites/${enc(s.site)}`; } },
    h("td", {}, h("a", { href: `/sites/${enc(s.site)}` }, s.site)),
    h("td", {}, s.gateways_online > 0 ? badge("online") : badge("offline"),
      " ", h("span", { class: "muted" }, `${s.gateways_online}/${s.gateways.length}`)),
    h("td", {}, fmtTime(s.last_data)),
    h("td", { class: "num" }, s.active_alarms > 0
      ? h("span", { class: "badge b-raised" }, s.active_alarms) : "0"),
    h("td", { class: "risk", dataset: { site: s.site } }, "—"),
    h("td", { class: "num" }, s.points)));
  main.replaceChildren(h("section", { class: "card" }, h("h1", {}, t("sites")),
    sites.length === 0 ? message(t("no_sites")) : h("table", { id: "sites" },
      h("thead", {}, h("tr", {}, [t("site"), t("status"), t("last_data"),
        t("active_alarms"), t("risk"), t("points")].map((x) => h("th", {}, x)))),
      h("tbody", {}, rows))));
  for (const s of sites) {
    optional(`/api/sites/${enc(s.site)}/groundwater/verdicts`).then((v) => {
      const cell = document.querySelector(`td.risk[data-site="${CSS.escape(s.site)}"]`);
      if (v && v.risk && cell) cell.replaceChildren(badge(v.risk.status));
    });
  }
}

// -- site page ----------------------------------------------------------------------

const RANGES = { all: null, "1y": 365 * 86400, "30d": 30 * 86400, "7d": 7 * 86400,
                 "1d": 86400, "1h": 3600 };

async function renderSite(site) {
  document.title = `${site} – groundwatch`;
  let points, alarms, acks, layout, sites, gwConfig, gwFlow, verdicts;
  try {
    [points, alarms, acks, layout, sites, gwConfig, gwFlow, verdicts] = await Promise.all([
      api(`/api/sites/${enc(site)}/points`),
      api(`/api/sites/${enc(site)}/alarms?limit=200`),
      api(`/api/sites/${enc(site)}/acks?limit=200`),
      api(`/api/sites/${enc(site)}/layout`),
      api("/api/sites"),
      optional(`/api/sites/${enc(site)}/groundwater/config`),
      optional(`/api/sites/${enc(site)}/groundwater/flow`),
      optional(`/api/sites/${enc(site)}/groundwater/verdicts`),
    ]);
  } catch (e) {
    if (e.status === 403 || e.status === 404) {
      return renderRefused(e.status === 403 ? "forbidden" : "not_found");
    }
    throw e;
  }
  const summary = sites.find((s) => s.site === site) || {};
  const params = new URLSearchParams(location.search);
  // The first chart: a well's point if the plan names wells, else one with a unit.
  const plan = planOf(layout.layout, gwConfig, gwFlow);
  const wells = new Set(((plan && plan.items) || []).filter((i) => i.kind === "well")
    .map((i) => i.device));
  const first = points.find((p) => wells.has(p.device)) || points.find((p) => p.unit)
    || points[0] || {};
  const view = {
    site, points, alarms, acks,
    point: params.get("point") || first.point,
    range: params.get("range") || "all",
    since: params.get("since"), until: params.get("until"),
  };
  const chartCard = h("section", { class: "card", id: "trend" });
  const latestCard = h("section", { class: "card", id: "latest" });
  const alarmsCard = h("section", { class: "card", id: "alarms" });
  main.replaceChildren(
    h("h1", {}, site, " ",
      (summary.gateways_online || 0) > 0 ? badge("online") : badge("offline"),
      " ", h("span", { class: "muted" }, `${t("last_data")}: ${fmtTime(summary.last_data)}`),
      verdicts && verdicts.risk ? [" ", t("risk"), " ", badge(verdicts.risk.status)] : null),
    h("div", { class: "grid" },
      h("div", {}, renderPlan(view, plan), latestCard),
      h("div", {}, chartCard, alarmsCard, renderVerdicts(verdicts))));
  const selectPoint = (point) => {
    view.point = point;
    renderLatest(latestCard, view, selectPoint);
    renderTrend(chartCard, view);
  };
  renderLatest(latestCard, view, selectPoint);
  renderAlarms(alarmsCard, view);
  await renderTrend(chartCard, view);
}

// The plan: the engineer's layout, else the groundwater configuration's wells and
// facilities; the flow arrow from the layout, else from the fitted well heads.
function planOf(layout, gwConfig, gwFlow) {
  const flowDeg = gwFlow && gwFlow.flow ? gwFlow.flow.direction_deg : undefined;
  if (layout && layout.items && layout.items.length) {
    return typeof layout.flow_deg === "number" || flowDeg === undefined
      ? layout : { ...layout, flow_deg: Math.round(flowDeg) };
  }
  if (!gwConfig || (!gwConfig.wells && !gwConfig.facilities)) return layout;
  const items = [];
  for (const [name, w] of Object.entries(gwConfig.wells || {})) {
    items.push({ device: name, kind: "well", x: w.x, y: w.y });
  }
  for (const [name, f] of Object.entries(gwConfig.facilities || {})) {
    items.push({ device: name, kind: f.kind === "tank" ? "tank" : "other", x: f.x, y: f.y });
  }
  const xs = items.map((i) => i.x), ys = items.map((i) => i.y);
  const x0 = Math.min(...xs), y0 = Math.min(...ys);
  const pad = Math.max(Math.max(...xs) - x0, Math.max(...ys) - y0, 10) * 0.15;
  return {
    items: items.map((i) => ({ ...i, x: i.x - x0 + pad, y: i.y - y0 + pad })),
    width: Math.max(...xs) - x0 + 2 * pad, height: Math.max(...ys) - y0 + 2 * pad,
    flow_deg: flowDeg === undefined ? undefined : Math.round(flowDeg),
  };
}

function yesNo(v) { return v === null || v === undefined ? "—" : v ? "✔" : "✘"; }

function renderVerdicts(v) {
  const card = h("section", { class: "card", id: "leak-tests" }, h("h2", {}, t("leak_tests")));
  if (!v || !v.verdicts || !v.verdicts.wells || !Object.keys(v.verdicts.wells).length) {
    card.append(message(t("no_results")));
    return card;
  }
  const site = v.verdicts.site || {};
  card.append(h("p", {}, t("risk"), " ", badge(v.risk.status), " ",
    h("span", { class: "muted" }, (v.risk.reasons || []).slice(0, 3).map((r) => r.reason)
      .join("; "))));
  card.append(h("table", { id: "verdicts" },
    h("thead", {}, h("tr", {}, ["", t("near_term"), t("mid_term"), t("long_term")]
      .map((x) => h("th", {}, x)))),
    h("tbody", {},
      h("tr", {}, h("td", {}, h("strong", {}, t("site"))),
        h("td", {}, yesNo(site.near_term_contained)), h("td", {}, yesNo(site.mid_term_falling)),
        h("td", {}, yesNo(site.long_term_meets_target))),
      Object.entries(v.verdicts.wells).map(([well, w]) => h("tr", {},
        h("td", {}, `${well} (${w.role})`), h("td", {}, yesNo(w.near_term_contained)),
        h("td", {}, yesNo(w.mid_term_falling)), h("td", {}, yesNo(w.long_term_meets_target)))))));
  return card;
}

function renderPlan(view, layout) {
  const card = h("section", { class: "card", id: "plan" }, h("h2", {}, t("plan")));
  if (!layout || !layout.items || layout.items.length === 0) {
    card.append(message(t("no_layout").replace("SITE", view.site)));
    return card;
  }
  const xs = layout.items.flatMap((i) => [i.x, ...(i.path || []).map((p) => p[0])]);
  const ys = layout.items.flatMap((i) => [i.y, ...(i.path || []).map((p) => p[1])]);
  const width = layout.width || Math.max(...xs) + 10;
  const height = layout.height || Math.max(...ys) + 10;
  const Y = (y) => height - y;  // site coordinates grow north; SVG's grow down
  const unit = Math.min(width, height) / 28;
  const latest = Object.fromEntries(view.points.map((p) => [p.device, p]));
  const plan = svg("svg", { class: "plan", viewBox: `0 0 ${width} ${height}`,
                            "data-items": layout.items.length });
  for (const item of layout.items) {
    const g = svg("g", { "data-device": item.device, style: "cursor:pointer" });
    const p = latest[item.device];
    if (item.kind === "cable" && item.path) {
      g.append(svg("polyline", { points: item.path.map(([x, y]) => `${x},${Y(y)}`).join(" "),
        fill: "none", stroke: "#d35400", "stroke-width": unit * 0.5,
        "stroke-dasharray": `${unit} ${unit * 0.5}` }));
    } else if (item.kind === "tank") {
      g.append(svg("rect", { x: item.x - unit * 2, y: Y(item.y) - unit, width: unit * 4,
        height: unit * 2, rx: unit, fill: "#7f8c8d" }));
    } else if (item.kind === "well") {
      g.append(svg("circle", { cx: item.x, cy: Y(item.y), r: unit, fill: "#1f6fa8" }));
    } else {
      g.append(svg("rect", { x: item.x - unit, y: Y(item.y) - unit, width: unit * 2,
        height: unit * 2, fill: "#2e4053" }));
    }
    const label = item.label || item.device;
    g.append(svg("text", { x: item.x + unit * 1.4, y: Y(item.y) - unit * 0.2,
      style: `font-size:${unit * 1.3}px` }, label));
    if (p) {
      g.append(svg("text", { x: item.x + unit * 1.4, y: Y(item.y) + unit * 1.3,
        style: `font-size:${unit * 1.1}px;fill:#4a5a6a` }, `${fmtValue(p.value)} ${p.unit}`));
      g.addEventListener("click", () => {
        const row = document.querySelector(`#latest tr[data-point="${CSS.escape(p.point)}"]`);
        if (row) row.click();
      });
    }
    plan.append(g);
  }
  if (typeof layout.flow_deg === "number") {
    const rad = (layout.flow_deg * Math.PI) / 180;
    const len = unit * 5;
    const cx = width - unit * 5, cy = unit * 5;
    const dx = Math.sin(rad) * len / 2, dy = -Math.cos(rad) * len / 2;
    plan.append(svg("defs", {}, svg("marker", { id: "arrowhead", markerWidth: 6,
      markerHeight: 6, refX: 3, refY: 3, orient: "auto" },
      svg("path", { d: "M0,0 L6,3 L0,6 z", fill: "#1f6fa8" }))));
    plan.append(svg("g", { id: "flow-arrow", "data-deg": layout.flow_deg },
      svg("line", { x1: cx - dx, y1: cy - dy, x2: cx + dx, y2: cy + dy, stroke: "#1f6fa8",
        "stroke-width": unit * 0.4, "marker-end": "url(#arrowhead)" }),
      svg("text", { x: width - unit * 0.5, y: cy + unit * 4.5, "text-anchor": "end",
        style: `font-size:${unit * 1.1}px` }, `${t("flow")} ${layout.flow_deg}°`)));
  }
  card.append(plan);
  return card;
}

function renderLatest(card, view, selectPoint) {
  const rows = view.points.map((p) => h("tr", {
      class: `clickable${p.point === view.point ? " selected" : ""}`,
      dataset: { point: p.point, quality: p.quality },
      onclick: () => selectPoint(p.point) },
    h("td", {}, p.point), h("td", { class: "num" }, fmtValue(p.value)),
    h("td", {}, p.unit), h("td", {}, badge(p.quality)),
    h("td", { class: "when" }, fmtTime(p.ts))));
  card.replaceChildren(h("h2", {}, t("latest")), h("table", { id: "latest-table" },
    h("thead", {}, h("tr", {}, [t("point"), t("value"), "", t("quality"), t("time")]
      .map((x) => h("th", {}, x)))), h("tbody", {}, rows)));
}

function rangeBounds(view) {
  if (view.range === "custom") return { since: view.since, until: view.until };
  const span = RANGES[view.range];
  if (!span) return { since: null, until: null };
  const p = view.points.find((x) => x.point === view.point);
  const anchor = p && p.ts ? new Date(p.ts).getTime() / 1000 : Date.now() / 1000;
  return { since: new Date((anchor - span) * 1000).toISOString(), until: null };
}

function syncUrl(view) {
  const q = new URLSearchParams({ point: view.point || "", range: view.range });
  if (view.range === "custom") {
    if (view.since) q.set("since", view.since);
    if (view.until) q.set("until", view.until);
  }
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

let chart = null;

async function renderTrend(card, view) {
  const toolbar = h("div", { class: "toolbar", id: "ranges" });
  for (const key of Object.keys(RANGES)) {
    toolbar.append(h("button", { type: "button", class: view.range === key ? "on" : "",
      dataset: { range: key },
      onclick: () => { view.range = key; renderTrend(card, view); } }, t(`range_${key}`)));
  }
  const local = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");
  const from = h("input", { type: "datetime-local", id: "from", value: local(view.since) });
  const to = h("input", { type: "datetime-local", id: "to", value: local(view.until) });
  toolbar.append(t("from"), from, t("to"), to, h("button", { type: "button", class: "act secondary",
    onclick: () => {
      view.range = "custom";
      view.since = from.value ? new Date(from.value + "Z").toISOString() : null;
      view.until = to.value ? new Date(to.value + "Z").toISOString() : null;
      renderTrend(card, view);
    } }, t("apply")));
  const { since, until } = rangeBounds(view);
  const q = new URLSearchParams({ point: view.point || "" });
  if (since) q.set("since", since);
  if (until) q.set("until", until);
  const csv = h("a", { id: "export-csv", class: "act", download: "",
    href: `/api/sites/${enc(view.site)}/readings.csv?${q}` }, t("export_csv"));
  const info = h("p", { class: "muted", id: "chart-info" });
  const box = h("div", { id: "chart" });
  card.replaceChildren(h("h2", {}, `${t("trend")}: ${view.point || "—"}`), toolbar,
    h("div", { class: "toolbar" }, csv, h("span", { class: "muted" }, t("zoom_hint"))),
    box, info);
  syncUrl(view);
  if (!view.point) return;
  const width = Math.max(320, card.clientWidth - 32);
  const series = await api(`/api/sites/${enc(view.site)}/series?${q}&max_points=${
    Math.min(4000, Math.max(200, Math.round(width * 2)))}`);
  drawChart(box, info, series, width, view, card);
}

function drawChart(box, info, s, width, view, card) {
  if (chart) { chart.destroy(); chart = null; }
  const plotted = s.mean.filter((v) => v !== null).length;
  box.dataset.plotted = plotted;
  box.dataset.total = s.total;
  box.dataset.raw = s.raw;
  window.gw.chart = { plotted, total: s.total, raw: s.raw, rendered: false };
  if (s.total === 0) {
    info.textContent = t("no_data");
    performance.mark("chart-rendered");
    window.gw.chart.rendered = true;
    return;
  }
  const bucket = s.raw ? "" : `; ${t("bucketed")} ${Math.round(s.bucket_s)} s`;
  info.textContent = `${s.total} ${t("readings")}${bucket}; ${s.unit}`;
  let first = true;
  const opts = {
    width, height: 320,
    scales: { x: { time: true } },
    series: [
      {},
      { label: t("mean"), stroke: "#1f6fa8", width: 1.5 },
      { label: t("min"), stroke: "#9cc3e0", width: 1 },
      { label: t("max"), stroke: "#9cc3e0", width: 1 },
    ],
    bands: [{ series: [3, 2], fill: "rgba(31,111,168,0.15)" }],
    axes: [{}, { label: s.unit }],
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      draw: [() => {
        if (first) {
          first = false;
          performance.mark("chart-rendered");
          window.gw.chart.rendered = true;
          box.dataset.rendered = "true";
        }
      }],
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const a = u.posToVal(u.select.left, "x");
        const b = u.posToVal(u.select.left + u.select.width, "x");
        view.range = "custom";
        view.since = new Date(a * 1000).toISOString();
        view.until = new Date(b * 1000).toISOString();
        renderTrend(card, view);
      }],
    },
  };
  chart = new uPlot(opts, [s.t, s.mean, s.min, s.max], box);
}

function renderAlarms(card, view) {
  const canAck = state.me && ["enterprise", "engineer", "open"].includes(state.me.role);
  const events = view.alarms.events;
  const newest = Object.fromEntries([...events].reverse().map((e) => [e.source, e]));
  const act = async (alarm, kind, text, status) => {
    try {
      await api(`/api/sites/${enc(view.site)}/alarms/${enc(alarm)}/${kind}`,
                { json: { comment: text.value } });
      status.textContent = t("saved");
      text.value = "";
      view.acks = await api(`/api/sites/${enc(view.site)}/acks?limit=200`);
      renderAlarms(card, view);
    } catch (e) {
      status.textContent = `${t("failed")}: ${e.message}`;
    }
  };
  const ackedBy = Object.fromEntries([...view.acks.acks].reverse()
    .filter((a) => a.kind === "ack").map((a) => [a.alarm, a]));
  const active = view.alarms.active.map((name) => {
    const e = newest[name] || {};
    const text = h("textarea", { placeholder: t("comment_ph"), class: "ack-comment" });
    const status = h("span", { class: "muted ack-status" });
    const last = ackedBy[name];
    return h("li", { dataset: { alarm: name } },
      h("strong", {}, name), " ", badge(e.state || "raised"), " ",
      h("span", { class: "muted" }, `${e.severity || ""} ${e.message || ""} ${fmtTime(e.ts)}`),
      last ? h("div", { class: "muted" },
        `${t("ack")}: ${last.actor}, ${fmtTime(last.ts)} — ${last.comment}`) : null,
      h("div", { class: "ackform" }, text,
        canAck ? h("button", { class: "act ack-button", type: "button",
          onclick: () => act(name, "ack", text, status) }, t("acknowledge")) : null,
        h("button", { class: "act secondary comment-button", type: "button",
          onclick: () => act(name, "comment", text, status) }, t("comment"))),
      status);
  });
  const history = events.map((e) => h("tr", {},
    h("td", {}, fmtTime(e.ts)), h("td", {}, e.source), h("td", {}, badge(e.state)),
    h("td", {}, e.severity || ""), h("td", { class: "num" }, fmtValue(e.value)),
    h("td", {}, e.message || "")));
  const notes = view.acks.acks.map((a) => h("tr", { dataset: { ack: a.id } },
    h("td", {}, fmtTime(a.ts)), h("td", {}, a.alarm),
    h("td", {}, a.kind === "ack" ? t("ack") : t("note")),
    h("td", {}, a.actor), h("td", {}, a.comment)));
  card.replaceChildren(h("h2", {}, t("active_alarms")),
    active.length ? h("ul", { id: "active-alarms" }, active) : message(t("none_active")),
    h("h2", {}, t("acks")),
    notes.length ? h("table", { id: "acks" }, h("thead", {}, h("tr", {},
      [t("time"), t("alarm"), t("kind"), t("by"), t("comment")].map((x) => h("th", {}, x)))),
      h("tbody", {}, notes)) : message("—"),
    h("h2", {}, t("history")),
    history.length ? h("table", { id: "alarm-history" }, h("thead", {}, h("tr", {},
      [t("time"), t("alarm"), t("state"), t("severity"), t("value"), t("message")]
        .map((x) => h("th", {}, x)))), h("tbody", {}, history)) : message(t("no_alarms")));
}

route().catch((e) => {
  main.replaceChildren(h("p", { class: "error", id: "page-error" }, String(e.message || e)));
});
