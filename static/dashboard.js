// The dashboard: polls GET /status and GET /ring, draws the ring (SVG) and one card per replica,
// and adds/removes replicas (POST /add, DELETE /rm) and asks "what if" (POST /ring/plan).
// Replica names and error texts are user input: they only ever go into textContent and attribute
// values, never into markup, and the page's CSP forbids inline script anyway.
(() => {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "chlb-admin-token";
  const HISTORY = 40; // polls of state history per card
  const MAX_BACKOFF_MS = 10000;
  const R = 92; // ring radius in SVG units (viewBox is 240 wide)
  // Tableau's palette without its reds (red means down on this page). A name keeps its colour for the
  // life of the page.
  const PALETTE = ["#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#9c755f", "#a0cbe8", "#8cd17d", "#bab0ac"];
  const RED_STATES = new Set(["down", "backoff"]);
  const AMBER_STATES = new Set(["starting", "replacing", "draining"]);

  const root = document.querySelector(".dash");
  const interval = Number(root.dataset.pollInterval) || 1000;
  const $ = (id) => document.getElementById(id);

  const colours = new Map();
  const cards = new Map(); // name -> {li, parts}
  const counters = new Map(); // name -> {t, requests}
  const history = new Map(); // name -> [state, ...]
  let failures = 0;
  let polls = 0;
  let ringMissing = false; // an LB without GET /ring is asked again only every RING_RETRY polls
  const RING_RETRY = 15;
  let pending = null; // a mutation waiting for the admin token
  let lastPlan = null;

  // ----- small helpers -------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function colourOf(name) {
    if (!colours.has(name)) {
      const used = new Set(colours.values());
      let colour = PALETTE.find((c) => !used.has(c));
      if (!colour) {
        let h = 2166136261; // FNV-1a: past ten names, a hue from the name itself
        for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
        colour = `hsl(${(h >>> 0) % 360} 60% 45%)`;
      }
      colours.set(name, colour);
    }
    return colours.get(name);
  }

  function splitNames(text) {
    return text.split(",").map((s) => s.trim()).filter(Boolean);
  }

  function messageOf(result) {
    const data = result.data;
    if (data && typeof data.message === "string") return data.message.replace(/^<Error> /, "");
    return `HTTP ${result.status}`;
  }

  function show(box, text) {
    box.textContent = text || "";
    box.hidden = !text;
  }
  const showError = (text) => show($("error"), text);
  const showNotice = (text) => show($("notice"), text);

  function fmt(value, digits) {
    return typeof value === "number" && Number.isFinite(value)
      ? value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
      : "–";
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  // ----- the ring --------------------------------------------------------------------------------
  function point(fraction, radius) {
    const angle = fraction * 2 * Math.PI - Math.PI / 2; // 0 at the top, clockwise
    return [radius * Math.cos(angle), radius * Math.sin(angle)];
  }

  function arc(from, to, colour, label) {
    // from/to are fractions of the circle, to > from; a whole turn is a circle.
    if (to - from >= 0.9999) {
      const circle = svg("circle", { cx: 0, cy: 0, r: R, fill: "none", stroke: colour, "stroke-width": 22, class: "arc" });
      circle.dataset.replica = label;
      circle.appendChild(svg("title", {})).textContent = label;
      return circle;
    }
    const [x1, y1] = point(from, R);
    const [x2, y2] = point(to, R);
    const large = to - from > 0.5 ? 1 : 0;
    const path = svg("path", {
      d: `M ${x1.toFixed(3)} ${y1.toFixed(3)} A ${R} ${R} 0 ${large} 1 ${x2.toFixed(3)} ${y2.toFixed(3)}`,
      fill: "none",
      stroke: colour,
      "stroke-width": 22,
      class: "arc",
    });
    path.dataset.replica = label;
    path.appendChild(svg("title", {})).textContent = label;
    return path;
  }

  // Ring strategies: a key goes to the first point clockwise from its hash, so the arc that ends at a
  // point belongs to that point's replica. Neighbouring arcs of one replica are merged.
  function pointArcs(points) {
    const sorted = [...points].sort((a, b) => a.position - b.position);
    const arcs = [];
    let start = sorted[sorted.length - 1].position - 1; // the wrap-around arc
    for (const p of sorted) {
      const last = arcs[arcs.length - 1];
      if (last && last.replica === p.replica) last.to = p.position;
      else arcs.push({ replica: p.replica, from: start, to: p.position });
      start = p.position;
    }
    if (arcs.length > 1 && arcs[0].replica === arcs[arcs.length - 1].replica) {
      const first = arcs.shift();
      arcs[arcs.length - 1].to = first.to + 1;
    }
    return arcs;
  }

  function shareArcs(members) {
    let at = 0;
    return members.map((m) => {
      const a = { replica: m.name, from: at, to: at + m.share };
      at += m.share;
      return a;
    });
  }

  function drawRing(ring) {
    const box = $("ring");
    box.replaceChildren(svg("circle", { cx: 0, cy: 0, r: R, class: "track" }));
    const members = ring.members || [];
    const points = ring.points || [];
    if (members.length === 0) {
      const text = svg("text", { x: 0, y: 4, "text-anchor": "middle", class: "empty" });
      text.textContent = "no replica on the ring";
      box.appendChild(text);
    }
    const arcs = points.length ? pointArcs(points) : shareArcs(members);
    for (const a of arcs) {
      let from = a.from;
      let to = a.to;
      if (from < 0) { from += 1; to += 1; }
      if (to - from <= 0) continue;
      box.appendChild(arc(from, to, colourOf(a.replica), a.replica));
    }
    for (const p of points.length <= 256 ? points : []) {
      const [x1, y1] = point(p.position, R + 12);
      const [x2, y2] = point(p.position, R + 17);
      box.appendChild(svg("line", { x1, y1, x2, y2, stroke: colourOf(p.replica), class: "tick" }));
    }
    const centre = svg("text", { x: 0, y: 0, "text-anchor": "middle", class: "centre" });
    centre.textContent = ring.strategy || "";
    box.appendChild(centre);
    const sub = svg("text", { x: 0, y: 16, "text-anchor": "middle", class: "centre-sub" });
    sub.textContent = `${members.length} on the ring`;
    box.appendChild(sub);

    $("ring-caption").textContent = points.length
      ? `${points.length} points on the circle; a key goes to the first point clockwise from its hash, ` +
        "so each arc is coloured by the replica at its clockwise end."
      : `${ring.strategy} places no points on a circle: each arc is the replica's share of a ` +
        `${(ring.sample_size || 0).toLocaleString("en-US")}-key sample.`;

    const legend = $("legend");
    legend.replaceChildren(...members.map((m) => {
      const li = el("li");
      const swatch = el("span", "swatch");
      swatch.style.background = colourOf(m.name);
      li.append(swatch, el("span", "legend-name", m.name), el("span", "legend-share", `${fmt(100 * m.share, 1)}%`));
      li.dataset.replica = m.name;
      return li;
    }));
  }

  // ----- replica cards ---------------------------------------------------------------------------
  function stateClass(state) {
    if (state === "up") return "ok";
    if (RED_STATES.has(state)) return "bad";
    if (AMBER_STATES.has(state)) return "busy";
    return "other";
  }

  function stat(dl, label) {
    const dt = el("dt", "", label);
    const dd = el("dd", "", "–");
    dl.append(dt, dd);
    return dd;
  }

  function makeCard(name) {
    const li = el("li", "card");
    li.dataset.name = name;
    const head = el("div", "card-head");
    const swatch = el("span", "swatch");
    const title = el("h3", "name", name);
    const badge = el("span", "state");
    head.append(swatch, title, badge);
    const dl = el("dl", "stats");
    const parts = {
      swatch,
      badge,
      ring: stat(dl, "on ring"),
      restarts: stat(dl, "restarts"),
      rate: stat(dl, "requests/s"),
      p99: stat(dl, "p99"),
      inflight: stat(dl, "in flight"),
      pid: stat(dl, "pid"),
    };
    parts.history = el("div", "history");
    parts.history.setAttribute("aria-hidden", "true");
    parts.error = el("p", "last-error");
    parts.errorText = el("span", "last-error-text");
    parts.errorTime = el("time", "last-error-time");
    parts.error.append(parts.errorText, parts.errorTime);
    const remove = el("button", "remove quiet", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${name}`);
    remove.addEventListener("click", () => confirmRemove(remove, name));
    li.append(head, dl, parts.history, parts.error, remove);
    return { li, parts };
  }

  let confirmTimer = 0;
  function confirmRemove(button, name) {
    // Two clicks: removing a replica moves its keys, so one stray tap must not do it.
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Click again to remove";
      clearTimeout(confirmTimer);
      confirmTimer = setTimeout(() => { button.dataset.armed = ""; button.textContent = "Remove"; }, 4000);
      return;
    }
    button.dataset.armed = "";
    button.textContent = "Remove";
    mutate("DELETE", "/rm", { n: 1, hostnames: [name] }, `Removed ${name}.`);
  }

  // "12 s ago", "3 min ago", ...: from the browser's clock, which may differ a little from the LB's.
  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // The last error, when it happened (relative; the absolute time in the title), red while it holds and
  // grey once the replica is up again: every error takes a replica out of "up", so a replica that is up
  // with a last error has been up since that error.
  function showLastError(parts, row, state, now) {
    parts.error.hidden = !row.last_error;
    parts.error.classList.toggle("past", Boolean(row.last_error) && state === "up");
    if (!row.last_error) {
      parts.errorText.textContent = "";
      parts.errorTime.hidden = true;
      return;
    }
    parts.errorText.textContent = `last error: ${row.last_error}`;
    const at = row.last_error_at;
    parts.errorTime.hidden = typeof at !== "number";
    if (typeof at !== "number") return;
    const when = new Date(at * 1000);
    parts.errorTime.textContent = ago((now - when.getTime()) / 1000);
    parts.errorTime.dateTime = when.toISOString();
    parts.errorTime.title = when.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
  }

  function updateCard(row, now) {
    let card = cards.get(row.name);
    if (!card) {
      card = makeCard(row.name);
      cards.set(row.name, card);
    }
    const { li, parts } = card;
    const state = String(row.state);
    li.dataset.state = state;
    li.classList.remove("ok", "bad", "busy", "other");
    li.classList.add(stateClass(state));
    parts.badge.textContent = state;
    parts.swatch.style.background = row.on_ring ? colourOf(row.name) : "transparent";
    parts.ring.textContent = row.on_ring ? "yes" : "no";
    parts.restarts.textContent = String(row.restarts ?? "–");
    parts.pid.textContent = row.pid == null ? "–" : String(row.pid);
    parts.inflight.textContent = fmt(row.in_flight, 0);
    parts.p99.textContent = typeof row.latency_p99_ms === "number" ? `${fmt(row.latency_p99_ms, 1)} ms` : "–";

    // requests/s from the counter's change since the previous poll (a restart keeps the name's counter
    // or resets it; a drop is shown as 0, never as a negative rate).
    if (typeof row.requests === "number") {
      const before = counters.get(row.name);
      if (before && now > before.t) {
        parts.rate.textContent = fmt(Math.max(0, row.requests - before.requests) / ((now - before.t) / 1000), 1);
      }
      counters.set(row.name, { t: now, requests: row.requests });
    }

    showLastError(parts, row, state, now);

    const seen = history.get(row.name) || [];
    seen.push(stateClass(state));
    if (seen.length > HISTORY) seen.shift();
    history.set(row.name, seen);
    parts.history.replaceChildren(...seen.map((cls) => el("span", cls)));
    return li;
  }

  function drawCards(status, now) {
    const names = new Set(status.replicas.map((r) => r.name));
    for (const name of [...cards.keys()]) {
      if (!names.has(name)) {
        cards.delete(name);
        counters.delete(name);
        history.delete(name);
      }
    }
    $("cards").replaceChildren(...status.replicas.map((row) => updateCard(row, now)));
    const up = status.replicas.filter((r) => r.state === "up").length;
    $("replica-count").textContent = `${status.replicas.length} desired, ${up} up`;
    const tls = status.tls ? ` · HTTPS on port ${status.tls.port} (${status.tls.protocols.join(", ")})` : "";
    $("strategy").textContent = `strategy ${status.strategy}${tls}`;
    const loaded = $("config-loaded");
    if (status.config_loaded_at) {
      const when = new Date(status.config_loaded_at * 1000);
      loaded.textContent = `configuration loaded ${ago(now / 1000 - status.config_loaded_at)}`;
      loaded.title = when.toLocaleString();
    }
  }

  // ----- polling ---------------------------------------------------------------------------------
  let timer = 0;
  let polling = false;

  async function refresh() {
    if (polling) return;
    polling = true;
    clearTimeout(timer);
    let delay = interval;
    try {
      const askRing = !ringMissing || polls % RING_RETRY === 0;
      polls += 1;
      const [status, ring] = await Promise.all([
        api("GET", "/status"),
        askRing ? api("GET", "/ring").catch(() => null) : null,
      ]);
      if (!status.ok || !status.data || !Array.isArray(status.data.replicas)) {
        throw new Error(messageOf(status));
      }
      drawCards(status.data, Date.now());
      if (askRing) {
        const hasRing = Boolean(ring && ring.ok && ring.data && Array.isArray(ring.data.members));
        ringMissing = !hasRing;
        $("ring-panel").hidden = !hasRing;
        $("ring-missing").hidden = hasRing;
        if (hasRing) drawRing(ring.data);
      }
      failures = 0;
      $("live").textContent = `live, updated ${new Date().toLocaleTimeString("en-GB")}`;
      $("live").classList.remove("lost");
      root.classList.remove("stale");
    } catch (err) {
      failures += 1;
      delay = Math.min(MAX_BACKOFF_MS, interval * 2 ** Math.min(failures, 4));
      $("live").textContent = `cannot reach the load balancer; retrying in ${Math.round(delay / 1000)} s`;
      $("live").classList.add("lost");
      root.classList.add("stale"); // what is shown is the last answer, no longer live
    } finally {
      polling = false;
      timer = setTimeout(refresh, delay);
    }
  }

  // ----- changes (need the admin token when the LB has one) --------------------------------------
  async function mutate(method, path, body, done) {
    showError("");
    showNotice(`${method === "DELETE" ? "Removing" : "Adding"}…`);
    let result;
    try {
      result = await api(method, path, body);
    } catch {
      showNotice("");
      showError("Cannot reach the load balancer.");
      return false;
    }
    if (result.status === 401) {
      showNotice("");
      const had = Boolean(sessionStorage.getItem(TOKEN_KEY));
      sessionStorage.removeItem(TOKEN_KEY);
      pending = { method, path, body, done };
      $("token-reason").textContent = had
        ? `The token was not accepted: ${messageOf(result)}`
        : `This load balancer needs its admin token to change replicas: ${messageOf(result)}`;
      $("token-form").hidden = false;
      $("token").focus();
      return false;
    }
    if (!result.ok) {
      showNotice("");
      showError(messageOf(result));
      return false;
    }
    showNotice(typeof done === "function" ? done(result.data) : done);
    refresh();
    return true;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token); // this tab only, gone when it closes
    $("token").value = "";
    $("token-form").hidden = true;
    const retry = pending;
    pending = null;
    if (retry) mutate(retry.method, retry.path, retry.body, retry.done);
  });

  $("token-cancel").addEventListener("click", () => {
    pending = null;
    $("token-form").hidden = true;
  });

  function membersOf(data) {
    return data && data.message && Array.isArray(data.message.replicas) ? data.message.replicas : [];
  }

  $("add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const names = splitNames($("add-names").value);
    const n = Math.max(Number($("add-count").value) || 1, names.length);
    const button = $("add-button");
    button.disabled = true;
    const before = new Set(cards.keys());
    const ok = await mutate("POST", "/add", { n, hostnames: names }, (data) => {
      const added = membersOf(data).filter((name) => !before.has(name));
      return `Added ${added.join(", ") || n}.`;
    });
    button.disabled = false;
    if (ok) $("add-names").value = "";
  });

  // ----- what if ---------------------------------------------------------------------------------
  $("plan-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const plan = { add: splitNames($("plan-add").value), remove: splitNames($("plan-remove").value) };
    const box = $("plan-result");
    if (!plan.add.length && !plan.remove.length) {
      box.hidden = false;
      $("plan-summary").textContent = "Name a replica to add or one to remove.";
      $("plan-flows").replaceChildren();
      $("plan-apply").hidden = true;
      return;
    }
    let result;
    try {
      result = await api("POST", "/ring/plan", plan);
    } catch {
      result = { ok: false, status: 0, data: { message: "cannot reach the load balancer" } };
    }
    box.hidden = false;
    $("plan-apply").hidden = !result.ok;
    if (!result.ok) {
      lastPlan = null;
      $("plan-summary").textContent = `No plan: ${messageOf(result)}`;
      $("plan-flows").replaceChildren();
      return;
    }
    lastPlan = plan;
    const d = result.data;
    const what = [plan.add.length ? `adding ${plan.add.join(", ")}` : "", plan.remove.length ? `removing ${plan.remove.join(", ")}` : ""]
      .filter(Boolean).join(" and ");
    $("plan-summary").textContent =
      `${what[0].toUpperCase()}${what.slice(1)} would move ${d.moved.toLocaleString("en-US")} of ` +
      `${d.sample_size.toLocaleString("en-US")} sampled keys (${fmt(100 * d.moved_share, 1)}%).`;
    $("plan-flows").replaceChildren(...(d.flows || []).slice(0, 12).map((f) =>
      el("li", "", `${f.from} → ${f.to}: ${f.keys.toLocaleString("en-US")} keys`)));
  });

  $("plan-apply").addEventListener("click", async () => {
    const plan = lastPlan;
    if (!plan) return;
    $("plan-apply").hidden = true;
    if (plan.add.length) {
      const ok = await mutate("POST", "/add", { n: plan.add.length, hostnames: plan.add }, `Added ${plan.add.join(", ")}.`);
      if (!ok) return;
    }
    if (plan.remove.length) {
      await mutate("DELETE", "/rm", { n: plan.remove.length, hostnames: plan.remove }, `Removed ${plan.remove.join(", ")}.`);
    }
  });

  refresh();
})();
