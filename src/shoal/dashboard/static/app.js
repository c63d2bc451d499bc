// The shoal dashboard: reads the control API (GET /v1/*, same origin, session cookie)
// every 2 s and draws it. Plain JavaScript, no build step. Every piece of data goes
// into the page as text (textContent, never innerHTML).
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#bcbd22", "#7f7f7f", "#d62728"];
  const state = {
    services: [],          // names, from /v1/ps (+ gateway)
    colours: new Map(),    // service -> colour, stable for the page's life
    chartService: null,
    configServices: null,  // services with a config (shoal.yaml's, from /v1/policies)
    histories: new Map(),  // service -> its config history <details>, kept across redraws
    charts: [],
    traceId: null,
    gatewayUrl: null,
    tick: 0,
  };

  // -- small helpers ----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      banner("This browser's session is no longer valid: run `shoal dashboard` in the app's directory for a new link.");
      throw new HttpError(401, "not logged in");
    }
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new HttpError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
    }
    return body;
  }

  function banner(text) {
    const node = $("banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function colour(service) {
    if (!state.colours.has(service)) {
      state.colours.set(service, PALETTE[state.colours.size % PALETTE.length]);
    }
    return state.colours.get(service);
  }

  const fmt = {
    ms(value) {
      if (value === null || value === undefined) return "–";
      return value >= 100 ? `${value.toFixed(0)} ms` : `${value.toFixed(value >= 10 ? 1 : 2)} ms`;
    },
    rps(value) { return value === null || value === undefined ? "–" : `${value.toFixed(value >= 10 ? 0 : 1)} rps`; },
    errors(success) {
      if (success === null || success === undefined) return "–";
      const pct = (1 - success) * 100;
      return `${pct === 0 ? "0" : pct < 0.1 ? "<0.1" : pct.toFixed(1)}% err`;
    },
    percent(success) { return success === null || success === undefined ? "–" : `${(success * 100).toFixed(1)}%`; },
    time(ns) { return new Date(ns / 1e6).toLocaleTimeString(); },
    // seconds since the epoch (a number) or an RFC 3339 text -> local date and time
    when(value) {
      if (value === null || value === undefined || value === "") return "–";
      const date = new Date(typeof value === "number" ? value * 1000 : value);
      return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
    },
    bytes(n) {
      if (n === null || n === undefined) return "–";
      if (n < 1024) return `${n} B`;
      if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
      return `${(n / 1024 / 1024).toFixed(1)} MiB`;
    },
    uptime(seconds) {
      if (seconds === null || seconds === undefined) return "–";
      const s = Math.floor(seconds);
      if (s < 60) return `${s}s`;
      if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
      return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    },
  };

  function fillTable(tbody, rows, emptyNode, emptyText) {
    tbody.replaceChildren(...rows);
    if (emptyNode) {
      emptyNode.textContent = emptyText || "nothing yet";
      emptyNode.hidden = rows.length > 0;
    }
  }

  function setOptions(select, names, keepFirst) {
    const current = select.value;
    const first = keepFirst ? [select.options[0]] : [];
    select.replaceChildren(...first, ...names.map((n) => el("option", { value: n, text: n })));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  // -- graph ------------------------------------------------------------------------------

  let graph = null;
  let graphShape = "";

  function ensureGraph() {
    if (graph || typeof cytoscape !== "function") return graph;
    graph = cytoscape({
      container: $("graph"),
      userZoomingEnabled: false,
      boxSelectionEnabled: false,
      style: [
        { selector: "node", style: {
          "label": "data(label)", "text-valign": "center", "text-halign": "center",
          "text-wrap": "wrap", "font-size": 11, "color": "#1d2330",
          "background-color": "data(fill)", "border-width": 2, "border-color": "data(ring)",
          "width": 92, "height": 46, "shape": "round-rectangle",
        } },
        { selector: "edge", style: {
          "label": "data(label)", "font-size": 10, "color": "#4b5563",
          "text-background-color": "#fbfcfd", "text-background-opacity": 1,
          "text-background-padding": 2, "curve-style": "bezier",
          "target-arrow-shape": "triangle", "width": "data(width)",
          "line-color": "data(ring)", "target-arrow-color": "data(ring)",
        } },
      ],
    });
    window.shoalGraph = graph;
    return graph;
  }

  function health(success) {
    if (success === null || success === undefined) return "#9aa3b2";
    if (success >= 0.99) return "#1a7f37";
    if (success >= 0.95) return "#b58100";
    return "#cf222e";
  }

  function drawGraph(ps, stat, hasGateway) {
    const services = new Map();
    const add = (name) => { if (name && !services.has(name)) services.set(name, { instances: 0 }); };
    if (hasGateway) add("gateway");
    for (const row of ps) { add(row.service); services.get(row.service).instances += 1; }
    const edges = (stat && stat.edges) || [];
    for (const e of edges) { add(e.source); add(e.target); }
    const byService = new Map(((stat && stat.services) || []).map((s) => [s.service, s]));

    const nodes = [...services.entries()].map(([name, info]) => {
      const s = byService.get(name);
      const detail = s && s.requests ? `${fmt.rps(s.rps)} · ${fmt.percent(s.success)}` : (name === "gateway" ? "" : `${info.instances}×`);
      return { group: "nodes", data: { id: name, label: detail ? `${name}\n${detail}` : name,
        fill: "#ffffff", ring: name === "gateway" ? "#14213d" : health(s ? s.success : null) } };
    });
    const links = edges.map((e) => ({ group: "edges", data: {
      id: `${e.source}->${e.target}`, source: e.source, target: e.target,
      label: `${fmt.rps(e.rps)} · ${fmt.errors(e.success)} · p99 ${fmt.ms(e.p99_ms)}`,
      ring: health(e.success), width: Math.min(6, 1.5 + Math.log10(1 + (e.rps || 0)) * 2),
    } }));

    // what tests and assistive tech can read without the canvas
    $("graph-elements").replaceChildren(
      ...nodes.map((n) => el("li", { "data-kind": "node", "data-id": n.data.id, text: n.data.id })),
      ...links.map((l) => el("li", { "data-kind": "edge", "data-id": l.data.id, text: l.data.label })),
    );
    $("graph-empty").hidden = edges.length > 0;

    const cy = ensureGraph();
    if (!cy) return;
    const shape = [...nodes.map((n) => n.data.id), ...links.map((l) => l.data.id)].sort().join("|");
    cy.batch(() => {
      const wanted = new Set([...nodes, ...links].map((x) => x.data.id));
      cy.elements().filter((x) => !wanted.has(x.id())).remove();
      for (const item of [...nodes, ...links]) {
        const existing = cy.getElementById(item.data.id);
        if (existing.nonempty()) existing.data(item.data);
        else cy.add(item);
      }
    });
    if (shape !== graphShape) {
      graphShape = shape;
      const roots = cy.nodes().filter((n) => n.indegree(false) === 0);
      cy.layout({ name: "breadthfirst", directed: true, roots, spacingFactor: 1.1, padding: 20, animate: false }).run();
    }
  }

  // -- instances --------------------------------------------------------------------------

  function drawInstances(ps) {
    const rows = ps.map((r) => el("tr", { dataset: { instance: r.instance } },
      el("td", { text: r.service }),
      el("td", { class: "mono", text: r.instance }),
      el("td", { text: r.version || "–" }),
      el("td", { class: `state-${r.state}`, text: r.state }),
      el("td", { class: `state-${r.health}`, text: r.health }),
      el("td", { class: "num", text: r.restarts }),
      el("td", { class: "num", text: fmt.uptime(r.uptime) }),
      el("td", { class: "mono", text: r.address || "–" }),
      el("td", { class: "num", text: r.pid || "–" }),
    ));
    fillTable($("instances").tBodies[0], rows);
  }

  // -- charts -----------------------------------------------------------------------------

  const CHARTS = [
    { title: "requests / s", series: [["rps", "rps", "#1f6feb"]] },
    { title: "success %", series: [["success", "success", "#1a7f37"]], scale: (v) => (v === null ? null : v * 100), range: [0, 100] },
    { title: "latency ms", series: [["p50_ms", "p50", "#6e7781"], ["p99_ms", "p99", "#cf222e"]] },
  ];

  function drawSummary(stat) {
    const s = stat && (stat.services || []).find((x) => x.service === state.chartService);
    const box = $("service-summary");
    if (!s) { box.replaceChildren(); return; }
    const item = (label, value) => el("div", {}, el("span", { class: "muted", text: label }), el("b", { text: value }));
    const errors = Object.entries(s.errors || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    box.replaceChildren(item("now", fmt.rps(s.rps)), item("success", fmt.percent(s.success)),
      item("p50", fmt.ms(s.p50_ms)), item("p99", fmt.ms(s.p99_ms)), item("in flight", s.in_flight),
      item("retries", s.retries), item("ejections", s.ejections), item("errors", errors || "none"));
  }

  async function drawCharts() {
    const service = state.chartService;
    if (!service || typeof uPlot !== "function") return;
    let body;
    try {
      body = await api(`/v1/series?service=${encodeURIComponent(service)}&minutes=${$("chart-minutes").value}`);
    } catch (err) {
      $("charts-empty").textContent = err.status === 404 ? "no data yet" : `no data yet (${err.message})`;
      $("charts-empty").hidden = false;
      return;
    }
    const points = (body && body.points) || [];
    $("charts-empty").textContent = "no data yet (a point every 10 s)";
    $("charts-empty").hidden = points.length > 0;
    const times = points.map((p) => p.time);
    const datasets = CHARTS.map((c) => [times, ...c.series.map(([key]) => points.map((p) => {
      const v = p[key] === undefined ? null : p[key];
      return c.scale ? c.scale(v) : v;
    }))]);
    if (state.charts.length && state.charts.service === service) {
      state.charts.forEach((chart, i) => chart.setData(datasets[i]));
      return;
    }
    state.charts.forEach((chart) => chart.destroy());
    const box = $("charts");
    box.replaceChildren();
    const width = Math.max(300, Math.floor((box.clientWidth - 32) / 3));
    state.charts = CHARTS.map((c, i) => {
      const holder = el("div", { class: "chart", "data-testid": "chart" }, el("h4", { text: c.title }));
      box.append(holder);
      return new uPlot({
        width, height: 180,
        series: [{}, ...c.series.map(([, label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
        scales: {
          x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 60 * Number($("chart-minutes").value), now]; } },
          ...(c.range ? { y: { range: c.range } } : {}),
        },
        axes: [{}, { size: 50 }],
        legend: { show: c.series.length > 1 },
      }, datasets[i], holder);
    });
    state.charts.service = service;
  }

  // -- traces and the waterfall -----------------------------------------------------------

  async function drawTraces() {
    const params = new URLSearchParams({ limit: "50" });
    if ($("trace-service").value) params.set("service", $("trace-service").value);
    if ($("trace-errors").checked) params.set("errors", "1");
    if ($("trace-min-ms").value) params.set("min_ms", $("trace-min-ms").value);
    const traces = await api(`/v1/traces?${params}`);
    const rows = traces.map((t) => el("tr", {
      class: `clickable${t.trace_id === state.traceId ? " selected" : ""}`,
      "data-testid": "trace-row", dataset: { traceId: t.trace_id },
      onclick: () => openTrace(t.trace_id),
    },
    el("td", { text: fmt.time(t.start_ns) }),
    el("td", {}, el("b", { text: t.root_service }), " ", t.root_name),
    el("td", { class: "num", text: fmt.ms(t.duration_ms) }),
    el("td", { class: "num", text: t.span_count }),
    el("td", { class: `num${t.error_count ? " bad" : ""}`, text: t.error_count }),
    el("td", { text: (t.services || []).join(", ") })));
    fillTable($("traces").tBodies[0], rows);
  }

  function traceLink(traceId) {
    return el("a", { href: `#trace=${traceId}`, class: "mono", "data-testid": "trace-link",
      text: traceId.slice(0, 8), title: traceId,
      onclick: (event) => { event.preventDefault(); openTrace(traceId); } });
  }

  function ordered(spans) {
    // depth-first from the roots (spans whose parent is not in the trace), by start time
    const ids = new Set(spans.map((s) => s.span_id));
    const children = new Map();
    for (const s of spans) {
      const parent = s.parent_id && ids.has(s.parent_id) ? s.parent_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    }
    const out = [];
    const walk = (parent, depth) => {
      for (const s of (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns)) {
        out.push([s, depth]);
        walk(s.span_id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  async function openTrace(traceId) {
    state.traceId = traceId;
    if (location.hash !== `#trace=${traceId}`) history.replaceState(null, "", `#trace=${traceId}`);
    for (const row of document.querySelectorAll("#traces tbody tr")) {
      row.classList.toggle("selected", row.dataset.traceId === traceId);
    }
    const box = $("waterfall");
    box.hidden = false;
    $("span-detail").hidden = true;
    let spans;
    try {
      spans = await api(`/v1/traces/${encodeURIComponent(traceId)}`);
    } catch (err) {
      $("waterfall-title").textContent = `trace ${traceId}: ${err.message}`;
      $("waterfall-rows").replaceChildren();
      return;
    }
    const start = Math.min(...spans.map((s) => s.start_ns));
    const end = Math.max(...spans.map((s) => s.end_ns));
    const total = Math.max(end - start, 1);
    $("waterfall-title").textContent = `trace ${traceId} · ${fmt.ms(total / 1e6)} · ${spans.length} spans`;
    $("waterfall-axis").replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { text: fmt.ms((total * f) / 1e6) })));
    const rows = ordered(spans).map(([s, depth]) => {
      const bar = el("div", { class: `span-bar${s.status === "error" ? " error" : ""}` });
      const left = ((s.start_ns - start) / total) * 100;
      const width = ((s.end_ns - s.start_ns) / total) * 100;
      bar.style.left = `${left}%`;
      bar.style.width = `${width}%`;
      bar.style.background = colour(s.service);
      const dur = el("span", { class: "span-dur", text: fmt.ms((s.end_ns - s.start_ns) / 1e6) });
      dur.style.left = `${Math.min(left + width, 88)}%`;
      const label = el("div", { class: "span-label", title: `${s.service} ${s.name}` },
        el("span", { class: "svc", text: s.service }), s.name);
      label.style.paddingLeft = `${depth * 14}px`;
      const row = el("div", {
        class: `span-row${s.status === "error" ? " error" : ""}`, "data-testid": "span-row",
        dataset: { spanId: s.span_id, service: s.service },
      }, label, el("div", { class: "span-track" }, bar, dur));
      row.addEventListener("click", () => {
        for (const r of document.querySelectorAll(".span-row.selected")) r.classList.remove("selected");
        row.classList.add("selected");
        showSpan(s);
      });
      return row;
    });
    $("waterfall-rows").replaceChildren(...rows);
    drawTraceLogs(traceId);
  }

  function showSpan(s) {
    const facts = [
      ["name", s.name], ["service", s.service], ["instance", s.instance], ["kind", s.kind],
      ["status", s.status_message ? `${s.status}: ${s.status_message}` : s.status],
      ["duration", fmt.ms((s.end_ns - s.start_ns) / 1e6)], ["span id", s.span_id],
      ["parent id", s.parent_id || "–"],
      ...Object.entries(s.attributes || {}).sort(([a], [b]) => a.localeCompare(b)),
    ];
    const detail = $("span-detail");
    detail.replaceChildren(el("table", {}, el("tbody", {}, ...facts.map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", { class: "mono", text: v }))))));
    detail.hidden = false;
  }

  async function drawTraceLogs(traceId) {
    const empty = $("trace-logs-empty");
    let records = [];
    try {
      records = await api(`/v1/logs?trace_id=${encodeURIComponent(traceId)}&limit=200`);
    } catch (err) {
      fillTable($("trace-logs").tBodies[0], [], empty, `no logs (${err.message})`);
      return;
    }
    const rows = records.slice().reverse().map((r) => el("tr", {},
      el("td", { text: fmt.time(r.time_ns) }), el("td", { class: "mono", text: r.instance }),
      el("td", { class: `level-${r.level}`, text: r.level }), el("td", { text: r.message })));
    fillTable($("trace-logs").tBodies[0], rows, empty, "no log lines were written in this trace");
  }

  // -- logs, failures, policies -----------------------------------------------------------

  async function drawLogs() {
    const params = new URLSearchParams({ limit: "200" });
    for (const [id, name] of [["log-service", "service"], ["log-level", "level"], ["log-text", "text"]]) {
      if ($(id).value) params.set(name, $(id).value);
    }
    const empty = $("logs-empty");
    let records;
    try {
      records = await api(`/v1/logs?${params}`);
    } catch (err) {
      fillTable($("logs").tBodies[0], [], empty, err.status === 404 ? "logs are not available from this app" : err.message);
      return;
    }
    const rows = records.map((r) => el("tr", { "data-testid": "log-row" },
      el("td", { text: fmt.time(r.time_ns) }), el("td", { class: "mono", text: r.instance }),
      el("td", { class: `level-${r.level}`, text: r.level }), el("td", { text: r.message }),
      el("td", {}, r.trace_id ? traceLink(r.trace_id) : "")));
    fillTable($("logs").tBodies[0], rows, empty, "no log records match");
  }

  async function drawFailures() {
    const empty = $("failures-empty");
    let failures;
    try {
      failures = await api("/v1/failures?limit=30");
    } catch (err) {
      fillTable($("failures").tBodies[0], [], empty, err.message);
      return;
    }
    const rows = failures.map((f) => el("tr", { "data-testid": "failure-row" },
      el("td", { text: fmt.time(f.time_ns) }),
      el("td", {}, el("b", { text: f.service }), " ", f.name),
      el("td", { class: "bad", text: f.reason }),
      el("td", { class: "num", text: f.status_code ?? "–" }),
      el("td", { text: f.message }),
      el("td", {}, traceLink(f.trace_id))));
    fillTable($("failures").tBodies[0], rows, empty, "no failures: every failed request the mesh explains shows here");
  }

  function dl(pairs) {
    return el("dl", {}, ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function describePolicy(p) {
    const traffic = p.traffic || {};
    const split = Object.entries(traffic.split || {}).map(([v, w]) => `${v} ${w}%`).join(", ");
    const authz = p.authz || {};
    return [
      ["timeout", `${p.timeout} s`],
      ["retries", p.retries ? `${p.retries.attempts} attempts${p.retries.per_try_timeout ? `, ${p.retries.per_try_timeout} s per try` : ""}` : null],
      ["outlier", p.outlier ? `eject after ${p.outlier.failures} failures for ${p.outlier.ejection} s` : null],
      ["limits", p.limits ? `${p.limits.concurrency} in flight per caller${p.limits.adaptive ? ", adaptive" : ""}${Object.keys(p.limits.rate || {}).length ? `, rate ${JSON.stringify(p.limits.rate)}` : ""}` : null],
      ["routes", (p.routes || []).map((r) => [(r.methods || []).join("|"), r.path, r.timeout ? `${r.timeout} s` : "", r.attempts ? `${r.attempts} attempts` : "", r.idempotent ? "idempotent" : ""].filter(Boolean).join(" ")).join("; ")],
      ["split", split],
      ["header match", (traffic.match || []).map((m) => JSON.stringify(m)).join("; ")],
      ["mirror", traffic.mirror ? JSON.stringify(traffic.mirror) : null],
      ["faults", traffic.faults ? JSON.stringify(traffic.faults) : null],
      ["authorization", `${authz.default || "–"}${(authz.rules || []).length ? `; rules ${(authz.rules || []).map((r) => r.name).join(", ")}` : ""}`],
    ];
  }

  async function drawPolicies() {
    let body;
    try {
      body = await api("/v1/policies");
    } catch (err) {
      $("policies").replaceChildren(el("p", { class: "muted", text: `not available (${err.message})` }));
      return;
    }
    state.configServices = [...Object.keys(body.services || {}), ...(body.gateway ? ["gateway"] : [])].sort();
    const parts = [];
    const gateway = body.gateway;
    if (gateway) {
      parts.push(el("h3", { text: `gateway ${state.gatewayUrl || `:${gateway.port}`}` }), el("table", { "data-testid": "gateway-routes" },
        el("thead", {}, el("tr", {}, el("th", { text: "prefix" }), el("th", { text: "service" }), el("th", { text: "strip prefix" }), el("th", { text: "jwt" }))),
        el("tbody", {}, ...(gateway.routes || []).map((r) => el("tr", {},
          el("td", { class: "mono", text: r.prefix }), el("td", { text: r.service }),
          el("td", { text: r.strip_prefix ? "yes" : "no" }), el("td", { text: r.jwt ? r.jwt.jwks : "–" }))))));
    }
    parts.push(el("h3", { text: `authorization: default ${body.default_policy}` }));
    if ((body.authz_rules || []).length) {
      parts.push(el("table", { "data-testid": "authz-rules" },
        el("thead", {}, el("tr", {}, ...["rule", "target", "action", "from", "methods", "paths"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...body.authz_rules.map((r) => el("tr", {},
          el("td", { text: r.name }), el("td", { text: r.target }), el("td", { text: r.action }),
          el("td", { text: (r.from || ["any caller"]).join(", ") }), el("td", { text: (r.methods || ["any"]).join(", ") }),
          el("td", { class: "mono", text: (r.paths || ["/"]).join(", ") }))))));
    }
    for (const [name, policy] of Object.entries(body.services || {})) {
      parts.push(el("div", { class: "policy", "data-testid": "service-policy", dataset: { service: name } },
        el("b", { text: name }), dl(describePolicy(policy)),
        el("details", {}, el("summary", { class: "muted", text: "as JSON" }), el("pre", { text: JSON.stringify(policy, null, 2) }))));
    }
    $("policies").replaceChildren(...parts);
  }

  // -- events, configuration --------------------------------------------------------------

  async function drawEvents() {
    const consumers = $("consumers").tBodies[0];
    const letters = $("dead-letters").tBodies[0];
    let body;
    try {
      body = await api("/v1/events");
    } catch (err) {
      $("event-streams").replaceChildren();
      $("events-empty").hidden = true;
      $("dead-count").textContent = "";
      fillTable(consumers, [], $("consumers-empty"), `not available (${err.message})`);
      fillTable(letters, [], $("dead-empty"), "not available");
      return;
    }
    const streams = body.streams || [];
    $("event-streams").replaceChildren(...streams.map((s) => el("div", { "data-testid": "event-stream", dataset: { stream: s.name } },
      el("span", { class: "muted", text: s.name }),
      el("b", { text: s.exists ? `${s.messages} message${s.messages === 1 ? "" : "s"} · ${fmt.bytes(s.bytes)}` : "not created yet" }))));
    const dead = body.dead_letters || { count: 0, recent: [] };
    const quiet = !streams.some((s) => s.exists && s.messages) && !(body.consumers || []).length && !dead.count;
    const empty = $("events-empty");
    empty.hidden = !quiet;

    const rows = (body.consumers || []).map((c) => el("tr", { "data-testid": "consumer-row", dataset: { service: c.service, topic: c.topic } },
      el("td", { text: c.service }),
      el("td", { class: "mono", text: c.topic }),
      el("td", { class: "num", text: c.pending }),
      el("td", { class: "num", text: c.ack_pending }),
      el("td", { class: `num${c.redelivered ? " warn" : ""}`, text: c.redelivered })));
    fillTable(consumers, rows, $("consumers-empty"), "no subscribers yet");

    const recent = dead.recent || [];
    $("dead-count").textContent = dead.count > recent.length ? `${dead.count} in all, the newest ${recent.length} shown` : `${dead.count}`;
    const letterRows = recent.map((d) => el("tr", { "data-testid": "dead-letter-row", dataset: { id: d.id, service: d.service } },
      el("td", { class: "nowrap", text: fmt.when(d.failed_at) }),
      el("td", { text: d.service }),
      el("td", {}, el("span", { class: "mono", text: d.topic }), d.source ? el("span", { class: "muted small", text: ` from ${d.source}` }) : null),
      el("td", { class: "mono", text: d.id }),
      el("td", { class: "num", text: d.deliveries }),
      el("td", { class: "bad", text: d.error || "–" }),
      el("td", {}, el("code", { class: "command", text: `shoal events replay --service ${d.service} ${d.id}` }))));
    fillTable(letters, letterRows, $("dead-empty"),
      "no dead letters: an event whose handler fails on every delivery (max_deliveries) lands here with its error");
  }

  async function configOf(name) {
    const path = encodeURIComponent(name);
    try {
      const [values, secrets] = await Promise.all([api(`/v1/config/${path}/values`), api(`/v1/secrets/${path}`)]);
      return { name, values: values || {}, secrets: secrets || [] };
    } catch (err) {
      return { name, error: err.message };
    }
  }

  async function drawConfig() {
    // the services with a config are shoal.yaml's (not its version entries): /v1/policies's
    const names = state.configServices || state.services;
    const found = await Promise.all(names.map(configOf));
    const blocks = [];
    const bare = [];
    for (const c of found) {
      const keys = Object.keys(c.values || {});
      if (!c.error && !keys.length && !c.secrets.length) { bare.push(c.name); continue; }
      blocks.push(el("div", { class: "config-service", "data-testid": "config-service", dataset: { service: c.name } },
        el("h3", { text: c.name }),
        c.error ? el("p", { class: "muted", text: `not available (${c.error})` }) : null,
        keys.length ? el("table", { "data-testid": "config-values" },
          el("thead", {}, el("tr", {}, el("th", { text: "key" }), el("th", { text: "value" }), el("th", { text: "source" }))),
          el("tbody", {}, ...keys.map((k) => el("tr", { "data-testid": "config-row", dataset: { key: k, source: c.values[k].source } },
            el("td", { class: "mono", text: k }),
            el("td", { class: "mono value", text: JSON.stringify(c.values[k].value) }),
            el("td", {}, el("span", { class: `source source-${c.values[k].source}`, text: c.values[k].source })))))) : null,
        !c.error && !keys.length ? el("p", { class: "muted small", text: "no values" }) : null,
        c.secrets && c.secrets.length ? el("p", { class: "secrets", "data-testid": "config-secrets" },
          el("span", { class: "muted", text: "secrets " }),
          ...c.secrets.map((s) => el("span", { class: "secret", "data-testid": "secret-name", title: `revision ${s.revision}, set ${fmt.when(s.time)}`, text: s.name }))) : null,
        c.error ? null : historyOf(c.name)));
    }
    $("config").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted", "data-testid": "config-empty" },
      "No configuration yet: give a service ", el("code", { text: "config: {KEY: VALUE}" }), " in shoal.yaml (it reads them with ",
      el("code", { text: "shoal.config()" }), "), or a secret with ", el("code", { text: "shoal secret set SERVICE NAME" }),
      " (read with ", el("code", { text: "shoal.secret(NAME)" }), ").")]));
    const note = $("config-bare");
    note.textContent = bare.length ? `no values or secrets: ${bare.join(", ")}` : "";
    note.hidden = !bare.length;
  }

  function historyOf(name) {
    let node = state.histories.get(name);
    if (!node) {
      node = el("details", { "data-testid": "config-history", dataset: { service: name },
        ontoggle: () => { if (node.open) drawHistory(name, node).catch(() => {}); } },
      el("summary", { class: "muted", text: "history" }), el("div", {}, el("p", { class: "muted", text: "loading…" })));
      state.histories.set(name, node);
    } else if (node.open) {
      drawHistory(name, node).catch(() => {});
    }
    return node;
  }

  async function drawHistory(name, node) {
    const box = node.lastElementChild;
    let rows;
    try {
      rows = await api(`/v1/config/${encodeURIComponent(name)}/history`);
    } catch (err) {
      box.replaceChildren(el("p", { class: "muted", text: `not available (${err.message})` }));
      return;
    }
    if (!rows.length) { box.replaceChildren(el("p", { class: "muted", text: "no changes kept" })); return; }
    box.replaceChildren(el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["rev", "time", "key", "source", "change"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows.slice().reverse().map((r) => el("tr", {},
        el("td", { class: "num", text: r.revision }),
        el("td", { class: "nowrap", text: fmt.when(r.time) }),
        el("td", { class: "mono", text: r.key }),
        el("td", { text: r.source }),
        el("td", { class: "mono value", text: r.operation === "unset" ? "unset" : JSON.stringify(r.value) })))))));
  }

  // -- the loop ---------------------------------------------------------------------------

  async function refresh() {
    const [status, ps] = await Promise.all([api("/v1/status"), api("/v1/ps")]);
    $("app-name").textContent = status.app;
    state.gatewayUrl = status.gateway || null;
    document.title = `shoal · ${status.app}`;
    const pill = $("app-status");
    pill.textContent = status.ready ? "ready" : `${status.not_ready.length} not ready`;
    pill.className = `pill ${status.ready ? "ok" : "bad"}`;

    let stat = null;
    try { stat = await api("/v1/stat?window=60"); } catch (_) { /* no data yet */ }
    const names = [...new Set(ps.map((r) => r.service))].sort();
    state.services = names;
    drawGraph(ps, stat, Boolean(status.gateway));
    drawInstances(ps);
    for (const id of ["trace-service", "log-service"]) setOptions($(id), names, true);
    setOptions($("chart-service"), names, false);
    if (!state.chartService && names.length) {
      state.chartService = names.includes("orders") ? "orders" : names[0];
      $("chart-service").value = state.chartService;
    }
    drawSummary(stat);
    const jobs = [drawCharts(), drawTraces(), drawLogs(), drawFailures(), drawEvents()];
    if (state.tick % 5 === 0) jobs.push(drawPolicies().then(drawConfig));
    await Promise.allSettled(jobs);
    state.tick += 1;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function loop() {
    try {
      await refresh();
      if (!$("banner").textContent.startsWith("This browser's session")) banner("");
    } catch (err) {
      if (err.status !== 401) banner(`cannot reach the app's control API (${err.message}); is it still running?`);
    }
    setTimeout(loop, REFRESH_MS);
  }

  function openFromHash() {
    const match = /^#trace=([0-9a-f]{32})$/i.exec(location.hash);
    if (match && match[1] !== state.traceId) openTrace(match[1].toLowerCase());
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("trace-search").addEventListener("submit", (e) => { e.preventDefault(); drawTraces().catch(() => {}); });
    $("log-search").addEventListener("submit", (e) => { e.preventDefault(); drawLogs().catch(() => {}); });
    $("chart-service").addEventListener("change", (e) => {
      state.chartService = e.target.value;
      state.charts.service = null;
      drawCharts().catch(() => {});
    });
    $("chart-minutes").addEventListener("change", () => drawCharts().catch(() => {}));
    window.addEventListener("hashchange", openFromHash);
    openFromHash();
    loop();
  });
})();
