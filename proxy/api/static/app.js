// The durable-proxy operator page: plain JavaScript over the admin API (served by proxy/ui.py).
//
// Views, chosen by the URL fragment:
//   #/?status=&service=&handler=&limit=&before=  the invocation list, newest first (filters, paging
//                                                 backwards with the API's order=desc&before= cursor)
//   #/inv/<id>                                    one invocation: status, actions, journal timeline
//   #/schedules                                   schedules with their next fire, pause/resume
//   #/deployments                                 deployments and the invocations pinned to each
// Every value from the API is put in the page with textContent (never as HTML).
"use strict";

(() => {
  const STATUSES = ["scheduled", "pending", "running", "suspended", "backing-off", "paused", "completed"];
  const ACTIONS = ["cancel", "kill", "pause", "resume", "purge"];
  const CONFIRM = {
    kill: "Kill this invocation? It stops at once: no compensation code runs, and its callers get a failure.",
    purge: "Purge this invocation? Its journal, result and idempotency key are deleted.",
    cancel: "Cancel this invocation? Its handler gets a cancellation error at its next step.",
  };
  const REFRESH_MS = 2000;
  /** Entry types the proxy completes (the handler may wait on them). */
  const COMPLETABLE = new Set(["sleep", "call", "awakeable", "promise_get", "promise_peek", "promise_complete"]);
  const SUMMARY_CHARS = 140;

  /** Where the admin token is kept: this tab's session storage (never the URL, never a cookie). */
  const TOKEN_KEY = "durable-proxy.admin-token";

  const state = {
    login: false, // the token prompt is shown: auto-refresh waits for it
    memoryToken: "", // the token when session storage is not available
    services: [], // [{name, ty, handlers: [{name, ty}]}]: Restate's service metadata
    cursors: [], // cursors of the (newer) pages before the current one (for "previous page")
    lastList: "", // the list query the cursors belong to
    renderSeq: 0,
    timer: 0,
    open: new Set(), // keys of expanded <details>, kept across refreshes
  };

  // ---- small helpers ------------------------------------------------------------------------

  /** Create an element: h("a", {href: "#", class: "x", dataset: {k: "v"}, onclick}, "text", child). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // ---- the admin token -----------------------------------------------------------------------

  function getToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (err) {
      return state.memoryToken;
    }
  }

  function setToken(token) {
    state.memoryToken = token;
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // No session storage (a sandboxed page): the token lives in memory until the tab closes.
    }
    document.getElementById("sign-out").hidden = !token;
  }

  /** The token prompt, shown when the admin API answers 401 (it has a token and this tab has not). */
  function showLogin(refused) {
    state.login = true;
    const input = h("input", {
      id: "token", type: "password", name: "token", autocomplete: "off", spellcheck: "false",
      required: true, "aria-label": "Admin token",
    });
    const form = h("form", { id: "login", class: "login" },
      h("label", { for: "token" }, "Admin token"), input,
      h("button", { type: "submit" }, "Sign in"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      setToken(token);
      state.login = false;
      render().then(schedule);
    });
    document.getElementById("main").replaceChildren(
      h("section", { class: "card login-card" },
        h("h2", {}, "This proxy's admin API needs a token"),
        h("p", { class: "muted" }, "The token given to the proxy with --admin-token-file (or PROXY_ADMIN_TOKEN). ",
          "It is kept in this tab's session storage only and sent as an Authorization header."),
        refused ? h("p", { class: "login-error", role: "alert" }, "That token was refused.") : null,
        form),
    );
    document.getElementById("main").dataset.view = "login";
    document.getElementById("counts").replaceChildren();
    showBanner("");
    input.focus();
  }

  async function api(path, options) {
    const headers = { accept: "application/json" };
    const token = getToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(path, { ...options, headers });
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (err) {
      body = { message: text };
    }
    if (!response.ok) {
      const message = body && body.message ? body.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  /** Wall-clock time as "YYYY-MM-DD HH:MM:SS.mmm" in the browser's time zone. */
  function fmtTime(ms) {
    if (!ms) return "—";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  /** A duration for humans: "850 ms", "2.35 s", "4m 05s", "3h 02m", "2d 4h". */
  function fmtDuration(ms) {
    ms = Math.max(0, Math.round(ms));
    if (ms < 1000) return `${ms} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
    const hours = Math.floor(m / 60);
    if (hours < 48) return `${hours}h ${pad(m % 60)}m`;
    return `${Math.floor(hours / 24)}d ${hours % 24}h`;
  }

  /** "in 59m 58s" or "3.00 s ago". */
  function fmtRelative(ms) {
    const delta = ms - Date.now();
    return delta >= 0 ? `in ${fmtDuration(delta)}` : `${fmtDuration(-delta)} ago`;
  }

  /** "2026-01-02 03:04:05.678 (3.00 s ago)". */
  function whenEl(ms) {
    return h("span", {}, fmtTime(ms), " ", h("span", { class: "muted" }, "(", timeEl(ms), ")"));
  }

  function retries(view) {
    return plural(view.retry_count, "retry", "retries");
  }

  function timeEl(ms) {
    if (!ms) return h("span", { class: "muted" }, "—");
    return h("time", { datetime: new Date(ms).toISOString(), title: fmtTime(ms) }, fmtRelative(ms));
  }

  /** "1 retry", "2 retries". */
  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  function json(value) {
    return value === undefined ? "null" : JSON.stringify(value);
  }

  function summary(text) {
    return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS - 1)}…` : text;
  }

  /** A JSON value, shortened, expandable to the full pretty-printed value when long. */
  function valueEl(value, key) {
    const text = json(value);
    if (text.length <= SUMMARY_CHARS) return h("code", { class: "value" }, text);
    const details = h(
      "details",
      { class: "value", dataset: { key } },
      h("summary", {}, h("code", {}, summary(text))),
      h("pre", {}, JSON.stringify(value, null, 2)),
    );
    if (state.open.has(key)) details.open = true;
    details.addEventListener("toggle", () => {
      if (details.open) state.open.add(key);
      else state.open.delete(key);
    });
    return details;
  }

  function failureEl(failure) {
    // The wire format leaves the default code 500 out; code 0 marks a note such as "paused by an operator".
    const code = failure.code === undefined ? 500 : failure.code;
    return h("span", { class: "failure" }, code ? [h("b", {}, String(code)), " "] : null, failure.message || "");
  }

  function badge(text, kind) {
    return h("span", { class: `badge badge-${kind || text}` }, text);
  }

  function statusBadges(view) {
    const out = [badge(view.status, view.status)];
    if (view.status === "completed") out.push(view.failure ? badge("failed", "failed") : badge("succeeded", "ok"));
    return out;
  }

  function invLink(id, text) {
    return h("a", { href: `#/inv/${encodeURIComponent(id)}`, class: "id" }, text || id);
  }

  function target(service, handler, key) {
    return `${service}/${key ? `${key}/` : ""}${handler}`;
  }

  function showBanner(message, kind) {
    const banner = document.getElementById("banner");
    if (!message) {
      banner.hidden = true;
      banner.textContent = "";
      return;
    }
    banner.hidden = false;
    banner.className = `banner banner-${kind || "error"}`;
    banner.textContent = message;
  }

  // ---- routing ----------------------------------------------------------------------------------

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const match = hash.match(/^\/inv\/([^?]+)/);
    if (match) return { view: "invocation", id: decodeURIComponent(match[1]) };
    if (hash === "/schedules") return { view: "schedules" };
    if (hash === "/deployments") return { view: "deployments" };
    const query = new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
    return { view: "list", query };
  }

  function listHash(query) {
    const clean = new URLSearchParams();
    for (const [k, v] of query) if (v) clean.set(k, v);
    const text = clean.toString();
    return text ? `#/?${text}` : "#/";
  }

  async function render() {
    const seq = ++state.renderSeq;
    const where = route();
    try {
      const [content, counts] = await Promise.all([
        where.view === "invocation" ? renderInvocation(where.id)
          : where.view === "schedules" ? renderSchedules()
            : where.view === "deployments" ? renderDeployments() : renderList(where.query),
        api("stats").then((s) => s.invocations).catch(() => null),
      ]);
      if (seq !== state.renderSeq) return; // a newer render started meanwhile
      const main = document.getElementById("main");
      main.replaceChildren(content);
      main.dataset.view = where.view;
      renderCounts(counts);
      const updated = document.getElementById("updated");
      updated.textContent = fmtTime(Date.now()).slice(11, 19);
      updated.title = "last refreshed";
      if (!document.getElementById("banner").classList.contains("banner-info")) showBanner("");
    } catch (err) {
      if (seq !== state.renderSeq) return;
      if (err.status === 401) {
        const refused = Boolean(getToken());
        setToken("");
        showLogin(refused);
      } else if (err.status === 404 && where.view === "invocation") {
        document.getElementById("main").replaceChildren(
          h("section", { class: "card" }, h("p", {}, `Invocation ${where.id} not found (purged, or never existed).`),
            h("a", { href: "#/" }, "← all invocations")),
        );
        showBanner("");
      } else {
        const what = err.status ? "Admin API error" : "Cannot reach the admin API";
        showBanner(`${what}: ${err.message}`, "error");
      }
    }
  }

  function renderCounts(counts) {
    const nav = document.getElementById("counts");
    if (!counts) return;
    const where = route();
    const current = where.view === "list" ? where.query.get("status") || "" : null;
    nav.replaceChildren(
      h("a", { href: "#/", class: current === "" ? "count count-active" : "count", dataset: { status: "" } },
        "all", h("span", { class: "num" }, String(Object.values(counts).reduce((a, b) => a + b, 0)))),
      ...STATUSES.map((status) =>
        h("a", {
          href: listHash(new URLSearchParams({ status })),
          class: current === status ? "count count-active" : "count",
          dataset: { status },
        }, badge(status, status), h("span", { class: "num" }, String(counts[status] || 0)))),
    );
  }

  // ---- the list ---------------------------------------------------------------------------------

  async function renderList(query) {
    const status = query.get("status") || "";
    const service = query.get("service") || "";
    const handler = query.get("handler") || "";
    const limit = query.get("limit") || "50";
    const before = query.get("before") || "";
    const filterKey = `${status}|${service}|${handler}|${limit}`;
    if (filterKey !== state.lastList || !before) {
      state.lastList = filterKey;
      state.cursors = [];
    } else if (state.cursors.length && state.cursors[state.cursors.length - 1] === before) {
      state.cursors.pop(); // the browser's back button returned to the previous page
    }
    // Newest first: the page opens on the latest invocations and pages back in time.
    const params = new URLSearchParams({ limit, order: "desc" });
    if (status) params.set("status", status);
    if (service) params.set("service", service);
    if (handler) params.set("handler", handler);
    if (before) params.set("before", before);
    const [page, services] = await Promise.all([
      api(`invocations?${params}`),
      api("services").then((body) => body.services || []).catch(() => state.services),
    ]);
    state.services = services;

    const navigate = (changes) => {
      const next = new URLSearchParams(query);
      for (const [k, v] of Object.entries(changes)) next.set(k, v);
      location.hash = listHash(next);
    };

    const svc = state.services.find((s) => s.name === service);
    const filters = h(
      "form",
      { class: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Status ",
        h("select", { id: "filter-status", onchange: (e) => navigate({ status: e.target.value, before: "" }) },
          h("option", { value: "" }, "any"),
          STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)))),
      h("label", {}, "Service ",
        h("select", {
          id: "filter-service",
          onchange: (e) => navigate({ service: e.target.value, handler: "", before: "" }),
        },
        h("option", { value: "" }, "any"),
        state.services.map((s) => h("option", { value: s.name, selected: s.name === service }, s.name)),
        service && !svc ? h("option", { value: service, selected: true }, service) : null)),
      h("label", {}, "Handler ",
        h("select", {
          id: "filter-handler",
          disabled: !svc,
          onchange: (e) => navigate({ handler: e.target.value, before: "" }),
        },
        h("option", { value: "" }, "any"),
        (svc ? svc.handlers : []).map((x) => h("option", { value: x.name, selected: x.name === handler }, x.name)))),
      h("label", {}, "Per page ",
        h("select", { id: "filter-limit", onchange: (e) => navigate({ limit: e.target.value, before: "" }) },
          ["20", "50", "100", "200"].map((n) => h("option", { value: n, selected: n === limit }, n)))),
      status || service || handler
        ? h("a", { href: "#/", class: "clear" }, "clear filters")
        : null,
    );

    const rows = page.invocations; // newest first, as the API pages them
    const table = h(
      "table",
      { class: "invocations" },
      h("thead", {}, h("tr", {},
        ["Invocation", "Target", "Status", "Attempt", "Created", "Modified", "Waiting on / last failure"]
          .map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows.map(listRow) : h("tr", {},
        h("td", { colspan: 7, class: "empty" }, "No invocations match these filters."))),
    );

    const pager = h(
      "div",
      { class: "pager" },
      h("span", { class: "muted" },
        `${plural(rows.length, "invocation", "invocations")} on this page (newest first)`),
      h("span", { class: "spacer" }),
      before ? h("button", { type: "button", id: "page-newest", onclick: () => navigate({ before: "" }) },
        "⇤ Newest") : null,
      h("button", {
        type: "button",
        id: "page-prev",
        title: "newer invocations",
        disabled: !state.cursors.length,
        onclick: () => navigate({ before: state.cursors.pop() || "" }),
      }, "← Newer"),
      h("button", {
        type: "button",
        id: "page-next",
        title: "older invocations",
        disabled: !page.next,
        onclick: () => { state.cursors.push(before); navigate({ before: page.next }); },
      }, "Older →"),
    );

    return h("section", { class: "list" }, filters, table, pager);
  }

  function listRow(view) {
    let note = null;
    const limit = limitSummary(view);
    if (limit) {
      note = h("span", { class: "waits limit" }, limit);
    } else if (view.waiting_on && view.waiting_on.length) {
      note = h("span", { class: "waits" }, view.waiting_on.map(waitSummary).join(", "));
    } else if (view.failure) {
      note = failureEl(view.failure);
    } else if (view.last_failure) {
      note = failureEl(view.last_failure);
    }
    return h(
      "tr",
      { class: `inv status-${view.status}`, dataset: { inv: view.id, status: view.status } },
      h("td", {}, invLink(view.id)),
      h("td", { class: "target" }, view.target),
      h("td", {}, statusBadges(view)),
      h("td", { class: "num" }, view.attempt, view.retry_count ? ` (${retries(view)})` : ""),
      h("td", {}, timeEl(view.created_ms)),
      h("td", {}, timeEl(view.modified_ms)),
      h("td", { class: "note", title: note ? note.textContent : null }, note),
    );
  }

  // Why an invocation waits for a limit: its place in a concurrency limit's line, or when a rate
  // limit lets it start ("" for neither).
  function limitSummary(view) {
    if (view.status === "pending" && view.queue_position) {
      const group = view.waiting_for_limit || {};
      let name = group.service || "?";
      if (group.handler) name += `/${group.handler}`;
      if (group.scope === "key") name += ` key "${group.key}"`;
      return `number ${view.queue_position} in line for the concurrency limit of ${name}`;
    }
    if (view.status === "scheduled" && view.rate_limited_until_ms) {
      return `rate limited: starts ${fmtRelative(view.rate_limited_until_ms)}`;
    }
    return "";
  }

  function waitSummary(wait) {
    switch (wait.kind) {
      case "timer": return `timer ${fmtRelative(wait.wake_at_ms)}`;
      case "call": return `call ${wait.target}`;
      case "awakeable": return `awakeable ${wait.awakeable_id}`;
      case "promise": return `promise "${wait.name}"`;
      default: return `${wait.kind} #${wait.index}`;
    }
  }

  // ---- schedules and deployments ---------------------------------------------------------------

  function scheduleWhen(view) {
    return view.cron ? `${view.cron} (${view.timezone})` : `every ${fmtDuration(view.every_ms)}`;
  }

  async function renderSchedules() {
    const { schedules } = await api("schedules");
    const row = (view) => h(
      "tr",
      { class: "schedule", dataset: { schedule: view.id } },
      h("td", { class: "id" }, view.id),
      h("td", { class: "target" }, view.target),
      h("td", {}, scheduleWhen(view)),
      h("td", {}, view.paused ? badge("paused", "paused") : timeEl(view.next_fire_ms)),
      h("td", {}, view.last_invocation_id ? invLink(view.last_invocation_id, fmtTime(view.last_fire_ms)) : "—"),
      h("td", { class: "num" }, `${view.fired} / ${view.skipped} / ${view.missed}`),
      h("td", {}, `${view.overlap} / ${view.catch_up}`),
      h("td", {}, h("button", {
        type: "button",
        onclick: () => scheduleAction(view.id, view.paused ? "resume" : "pause"),
      }, view.paused ? "resume" : "pause")),
    );
    return h("section", { class: "list" }, h("h2", {}, "Schedules"), h(
      "table",
      { class: "invocations schedules" },
      h("thead", {}, h("tr", {}, ["Schedule", "Target", "When", "Next fire", "Last fire", "Fired / skipped / missed",
        "Overlap / catch-up", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, schedules.length ? schedules.map(row) : h("tr", {},
        h("td", { colspan: 8, class: "empty" }, "No schedules (POST /schedules, or @svc.handler(schedule=...))."))),
    ));
  }

  async function scheduleAction(id, action) {
    try {
      await api(`schedules/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      showBanner(`Schedule ${id}: ${action}d.`, "info");
    } catch (err) {
      showBanner(`${action} failed: ${err.message}`, "error");
    }
    render();
  }

  async function renderDeployments() {
    const { deployments } = await api("deployments");
    const details = await Promise.all(deployments.map((d) => api(`deployments/${encodeURIComponent(d.id)}`)));
    const row = (view) => {
      const pinned = view.pinned || { count: 0, by_status: {} };
      const statuses = Object.entries(pinned.by_status).map(([status, n]) => `${n} ${status}`).join(", ");
      return h(
        "tr",
        { class: "deployment", dataset: { deployment: view.id } },
        h("td", { class: "id" }, view.id),
        h("td", {}, view.uri),
        h("td", {}, (view.services || []).map((svc) => svc.name).join(", ")),
        h("td", { class: "num" }, String(pinned.count)),
        h("td", {}, pinned.count ? statuses : badge("drained", "ok")),
      );
    };
    return h("section", { class: "list" }, h("h2", {}, "Deployments"), h(
      "table",
      { class: "invocations deployments" },
      h("thead", {}, h("tr", {}, ["Deployment", "URI", "Services", "Pinned", "Pinned by status"]
        .map((t) => h("th", {}, t)))),
      h("tbody", {}, details.length ? details.map(row) : h("tr", {},
        h("td", { colspan: 5, class: "empty" }, "No deployments."))),
    ));
  }

  // ---- one invocation ---------------------------------------------------------------------------

  async function renderInvocation(id) {
    const view = await api(`invocations/${encodeURIComponent(id)}`);
    const done = view.status === "completed";
    const facts = [
      ["Target", view.target],
      ["Status", statusBadges(view)],
      ["Attempt", `${view.attempt}${view.retry_count ? ` · ${retries(view)}` : ""}`],
      ["Created", whenEl(view.created_ms)],
      ["Modified", whenEl(view.modified_ms)],
    ];
    if (view.completed_ms) {
      const took = fmtDuration(view.completed_ms - view.created_ms);
      facts.push(["Completed", h("span", {}, fmtTime(view.completed_ms), ` (took ${took})`)]);
    }
    if (view.next_retry_ms && !done) facts.push(["Next retry", whenEl(view.next_retry_ms)]);
    if (view.idempotency_key) facts.push(["Idempotency key", h("code", {}, view.idempotency_key)]);
    if (view.limit_key) facts.push(["Limit key", h("code", {}, view.limit_key)]);
    const limit = limitSummary(view);
    if (limit) facts.push(["Limits", h("span", { class: "limit" }, limit)]);
    if (view.deployment_id) facts.push(["Deployment", h("code", {}, view.deployment_id)]);

    const actions = h(
      "div",
      { class: "actions" },
      ACTIONS.map((action) => h("button", {
        type: "button",
        class: `action action-${action}`,
        dataset: { action },
        disabled: !actionApplies(action, view),
        onclick: () => act(action, view.id),
      }, action)),
      h("a", {
        href: `invocations/${encodeURIComponent(view.id)}/journal`,
        class: "export",
        download: `${view.id}.json`,
        title: "For local replay: python -m handlers_sdk replay <file> module:app",
      }, "export journal"),
    );

    const header = h(
      "section",
      { class: "card head", dataset: { inv: view.id, status: view.status } },
      h("div", { class: "crumbs" }, h("a", { href: "#/" }, "← all invocations")),
      h("h1", {}, h("span", { class: "id" }, view.id)),
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      actions,
    );

    const outcome = [];
    if (view.last_failure && !done) {
      outcome.push(h("div", { class: "alert alert-warn", id: "last-failure" },
        h("b", {}, `Last failure (attempt ${view.attempt}): `), failureEl(view.last_failure)));
    }
    if (done && view.failure) {
      outcome.push(h("div", { class: "alert alert-error", id: "failure" },
        h("b", {}, "Failed: "), failureEl(view.failure)));
    } else if (done) {
      outcome.push(h("div", { class: "alert alert-ok", id: "result" },
        h("b", {}, "Result: "), valueEl(view.result, `result:${view.id}`)));
    }
    if (view.waiting_on && view.waiting_on.length) {
      outcome.push(h("div", { class: "alert alert-wait", id: "waiting" },
        h("b", {}, "Waiting on: "),
        h("ul", {}, view.waiting_on.map((w) =>
          h("li", { dataset: { kind: w.kind, index: w.index } }, waitDetail(w))))));
    }

    return h("div", { class: "invocation" }, header, outcome, timeline(view));
  }

  function actionApplies(action, view) {
    const done = view.status === "completed";
    switch (action) {
      case "purge": return done;
      case "resume": return view.status === "paused";
      case "pause": return !done && view.status !== "paused";
      default: return !done;
    }
  }

  async function act(action, id) {
    if (CONFIRM[action] && !window.confirm(CONFIRM[action])) return;
    try {
      await api(`invocations/${encodeURIComponent(id)}/${action}`, { method: "PATCH" });
      showBanner(`${action}: done for ${id}`, "info");
      setTimeout(() => showBanner(""), 4000);
      if (action === "purge") location.hash = "#/";
      else await render();
    } catch (err) {
      if (err.status === 401) {
        setToken("");
        showLogin(true);
        return;
      }
      showBanner(`${action} failed: ${err.message}`, "error");
    }
  }

  function waitDetail(wait) {
    const label = h("span", { class: "muted" }, `#${wait.index} `);
    switch (wait.kind) {
      case "timer":
        return [label, "timer, wakes at ", fmtTime(wait.wake_at_ms), " (", timeEl(wait.wake_at_ms), ")"];
      case "call":
        return [label, "call ", wait.target, " → ", invLink(wait.invocation_id)];
      case "awakeable":
        return [label, "awakeable ", h("code", { class: "awakeable" }, wait.awakeable_id),
          h("span", { class: "muted" }, " (resolve with POST /restate/awakeables/<id>/resolve on the ingress)")];
      case "promise":
        return [label, "durable promise ", h("code", {}, wait.name)];
      default:
        return [label, wait.kind];
    }
  }

  // ---- the journal timeline ----------------------------------------------------------------------

  const KIND_LABELS = {
    run: "step",
    sleep: "sleep",
    call: "call",
    send: "send",
    awakeable: "awakeable",
    get_state: "get state",
    set_state: "set state",
    clear_state: "clear state",
    clear_all_state: "clear all state",
    state_keys: "state keys",
    promise_get: "promise",
    promise_peek: "peek promise",
    promise_complete: "complete promise",
    cancel: "cancelled",
    patch: "patched",
  };

  function timeline(view) {
    const journal = view.journal || [];
    const waiting = new Set((view.waiting_on || []).map((w) => w.index));
    const timed = journal.filter((it) => it.entry.type === "run" && it.entry.started_ms);
    const t0 = view.created_ms;
    let t1 = Math.max(view.completed_ms || 0, view.modified_ms || 0);
    for (const it of timed) t1 = Math.max(t1, it.entry.started_ms + (it.entry.duration_ms || 0));
    const span = Math.max(1, t1 - t0);

    const items = journal.map((item) => stepRow(view, item, waiting, timed.length ? { t0, span } : null));
    const next = nextRow(view, journal);
    if (next) items.push(next);

    return h(
      "section",
      { class: "card" },
      h("h2", {}, "Journal ", h("span", { class: "muted" }, plural(journal.length, "entry", "entries"))),
      timed.length || !journal.some((it) => it.entry.type === "run") ? null : h("p", { class: "muted hint" },
        "These steps carry no timings (journaled by an SDK without them): entries are shown in journal order."),
      items.length
        ? h("ol", { class: "timeline", id: "timeline" }, items)
        : h("p", { class: "empty" }, "The journal is empty: no step has completed yet."),
    );
  }

  /** True when the entry waits for a completion that will never come: its invocation has completed. */
  function neverCompletes(view, e) {
    return view.status === "completed" && COMPLETABLE.has(e.type) && !e.completed && !e.failure;
  }

  function stepRow(view, item, waiting, scale) {
    const e = item.entry;
    const type = e.type;
    const isWaiting = waiting.has(item.index);
    const completable = COMPLETABLE.has(type);
    const never = neverCompletes(view, e);
    let phase = "done";
    if (e.failure) phase = "failed";
    else if (never) phase = "cancelled";
    else if (completable && !e.completed) phase = isWaiting ? "waiting" : "pending";

    const title = h("div", { class: "step-title" },
      h("span", { class: "index" }, `#${item.index}`),
      badge(KIND_LABELS[type] || type, `kind-${type}`),
      h("span", { class: "step-name" }, stepName(e)),
      isWaiting ? badge("waiting", "waiting") : null,
      never ? badge(type === "sleep" ? "never fired" : "never completed", "cancelled") : null,
      completable && !isWaiting && !e.completed && !never ? badge("pending", "pending") : null,
      e.failure ? badge("failed", "failed") : null,
      h("span", { class: "spacer" }),
      stepTiming(view, e),
    );
    const body = h("div", { class: "step-body" }, stepDetail(view, item));
    const bar = scale && type === "run" && e.started_ms ? timingBar(e, scale) : null;
    return h("li", {
      class: `step step-${phase}`,
      dataset: { index: item.index, kind: type, state: phase },
      title: e.source ? `source: ${e.source}` : null,
    }, h("span", { class: "dot", "aria-hidden": "true" }), title, body, bar);
  }

  function stepName(e) {
    switch (e.type) {
      case "run": return e.name || "(unnamed)";
      case "sleep": return e.name || "";
      case "call":
      case "send": return target(e.service, e.handler, e.key);
      case "get_state":
      case "set_state":
      case "clear_state": return e.key;
      case "promise_get":
      case "promise_peek":
      case "promise_complete":
      case "patch": return e.name;
      default: return "";
    }
  }

  function stepTiming(view, e) {
    if (e.type !== "run" || !e.started_ms) return null;
    return h("span", { class: "timing", title: `started ${fmtTime(e.started_ms)}` },
      `+${fmtDuration(e.started_ms - view.created_ms)}`, " · ", h("b", {}, fmtDuration(e.duration_ms || 0)));
  }

  function timingBar(e, scale) {
    const left = ((e.started_ms - scale.t0) / scale.span) * 100;
    const width = Math.max(0.4, ((e.duration_ms || 0) / scale.span) * 100);
    const bar = h("span", { class: e.failure ? "bar bar-failed" : "bar" });
    bar.style.left = `${Math.min(99.6, Math.max(0, left))}%`;
    bar.style.width = `${Math.min(100 - Math.max(0, left), width)}%`;
    return h("div", { class: "track", title: `${fmtTime(e.started_ms)} for ${fmtDuration(e.duration_ms || 0)}` }, bar);
  }

  /** The failure or the value of an entry (the wire format leaves a null value out). */
  function outcomeEls(view, item) {
    const e = item.entry;
    if (e.failure) return [h("span", { class: "label" }, "failure "), failureEl(e.failure)];
    const value = e.value === undefined ? null : e.value;
    return [h("span", { class: "label" }, "value "), valueEl(value, `v:${view.id}:${item.index}`)];
  }

  function stepDetail(view, item) {
    const e = item.entry;
    const key = `${view.id}:${item.index}`;
    const never = neverCompletes(view, e);
    switch (e.type) {
      case "run":
        return outcomeEls(view, item);
      case "sleep":
        // No countdown on a timer that will never fire: the invocation completed before it was due.
        if (never) {
          return ["never fired: the invocation completed first; was due at ",
            h("span", { class: "wake" }, fmtTime(e.wake_at_ms))];
        }
        return [
          e.completed ? "fired; was due " : "wakes at ",
          h("span", { class: "wake" }, fmtTime(e.wake_at_ms)),
          " (", timeEl(e.wake_at_ms), ")",
        ];
      case "call":
        return [
          "child ", invLink(e.invocation_id),
          e.input !== undefined ? [h("span", { class: "label" }, " input "), valueEl(e.input, `in:${key}`)] : null,
          e.completed ? [" · ", outcomeEls(view, item)] : h("span", { class: "muted" },
            never ? " · never completed: the invocation completed first" : " · no result yet"),
        ];
      case "send":
        return [
          "started ", invLink(e.invocation_id),
          e.delay_ms ? ` after a delay of ${fmtDuration(e.delay_ms)}` : "",
          e.input !== undefined ? [h("span", { class: "label" }, " input "), valueEl(e.input, `in:${key}`)] : null,
        ];
      case "awakeable":
        return [
          "id ", h("code", { class: "awakeable" }, e.id),
          e.completed ? [" · ", outcomeEls(view, item)] : h("span", { class: "muted" },
            never ? " · never resolved: the invocation completed first" : " · not resolved yet"),
        ];
      case "get_state":
        return e.found ? outcomeEls(view, item) : h("span", { class: "muted" }, "not found");
      case "set_state":
        return outcomeEls(view, item);
      case "state_keys":
        return h("code", {}, json(e.keys || []));
      case "promise_complete":
        return [
          e.rejection ? [h("span", { class: "label" }, "reject "), failureEl(e.rejection)]
            : [h("span", { class: "label" }, "resolve "), valueEl(e.resolution, `res:${key}`)],
          e.completed ? [" · ", outcomeEls(view, item)] : null,
        ];
      case "promise_get":
      case "promise_peek":
        return e.completed
          ? outcomeEls(view, item)
          : h("span", { class: "muted" }, e.type === "promise_peek" ? "not found"
            : never ? "never resolved: the invocation completed first" : "not resolved yet");
      case "cancel":
        return h("span", { class: "muted" }, "the handler was told here that the invocation is cancelled (409)");
      case "patch":
        return h("span", { class: "muted" }, "reached this code change after it was deployed: replays take its new branch");
      default:
        return [];
    }
  }

  /** The step the handler is on (or will retry) when the invocation is not done yet. */
  function nextRow(view, journal) {
    if (view.status === "completed") return null;
    const index = journal.length ? Math.max(...journal.map((it) => it.index)) + 1 : 0;
    let text;
    switch (view.status) {
      case "running": text = `running: attempt ${view.attempt}${index ? ` is past entry #${index - 1}` : ""}`; break;
      case "backing-off":
        text = `backing off: retry ${view.retry_count} ${view.next_retry_ms ? fmtRelative(view.next_retry_ms) : "soon"}`;
        break;
      case "paused": text = "paused: resume it to try again"; break;
      case "suspended": text = "suspended: re-invoked when what it waits on completes"; break;
      case "scheduled":
        text = `scheduled${view.next_retry_ms ? ` to start ${fmtRelative(view.next_retry_ms)}` : ""}`;
        break;
      default: text = `${view.status}: waiting for its turn`;
    }
    const dataset = { index, kind: "next", state: view.status };
    return h("li", { class: `step step-next status-${view.status}`, dataset },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("div", { class: "step-title" }, h("span", { class: "index" }, `#${index}`), badge("next", "next"),
        h("span", { class: "step-name" }, text),
        h("span", { class: "spacer" }),
        h("span", { class: "timing" }, `attempt ${view.attempt}${view.retry_count ? `, ${retries(view)}` : ""}`)),
      view.last_failure
        ? h("div", { class: "step-body" }, h("span", { class: "label" }, "last failure "), failureEl(view.last_failure))
        : null);
  }

  // ---- start ------------------------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    if (document.getElementById("auto-refresh").checked) {
      state.timer = setTimeout(async () => {
        // Do not re-render a filter while the operator is picking from it.
        const active = document.activeElement;
        if (!state.login && !(active && active.tagName === "SELECT")) await render();
        schedule();
      }, REFRESH_MS);
    }
  }

  function start() {
    window.addEventListener("hashchange", () => render());
    document.getElementById("auto-refresh").addEventListener("change", schedule);
    document.getElementById("sign-out").hidden = !getToken();
    document.getElementById("sign-out").addEventListener("click", () => {
      setToken("");
      render();
    });
    document.getElementById("goto").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = document.getElementById("goto-id").value.trim();
      if (id) location.hash = `#/inv/${encodeURIComponent(id)}`;
    });
    render().then(schedule);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
