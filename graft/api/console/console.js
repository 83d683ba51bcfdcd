// The Graft web console. It calls only the node that served it: /ui/cluster (every member's
// status, gathered by that node), /query, /command and the /cluster admin routes.
"use strict";

const TOKEN_KEY = "graft-token";
const HISTORY_KEY = "graft-history";
const POLL_MS = 1000;
const BEHIND_ENTRIES = 100; // a member this many entries behind the leader's commit is flagged
const CHART_POINTS = 120;
const CERT_WARN_DAYS = 30; // as the node's own log warning
const DAY_S = 86400;

const $ = (id) => document.getElementById(id);
const state = {
  leader: null, term: null, counts: null, at: null, writes: [], reads: [],
  buckets: null, p50: [], p99: [], campaigns: new Set(), highestTerm: 0, node: null,
};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  const text = await response.text();
  if (response.status === 401) showTokenForm();
  return { status: response.status, headers: response.headers, text };
}

function errorText(answer) {
  try {
    const error = JSON.parse(answer.text).error;
    return answer.status + " " + error.code + ": " + error.message;
  } catch (e) {
    return answer.status + ": " + answer.text.slice(0, 500);
  }
}

function showTokenForm() { $("token-form").hidden = false; }

// -- the cluster view ---------------------------------------------------------------------

async function poll() {
  try {
    const answer = await api("/ui/cluster");
    if (answer.status !== 200) {
      $("poll-state").textContent = errorText(answer);
    } else {
      render(JSON.parse(answer.text));
      $("poll-state").textContent = "live, updated " + new Date().toLocaleTimeString();
    }
  } catch (e) {
    $("poll-state").textContent = "this node does not answer: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

function render(doc) {
  state.node = doc.node;
  $("served-by").textContent = "console of " + doc.node;
  const reachable = doc.members.filter((m) => m.reachable && m.status);
  const leaders = reachable.filter((m) => m.status.role === "leader");
  leaders.sort((a, b) => b.status.term - a.status.term);
  const leader = leaders.length ? leaders[0] : null;
  const commit = leader ? leader.status.commit : Math.max(0, ...reachable.map((m) => m.status.commit));
  const lags = doc.members.map((m) => (m.reachable && m.status ? Math.max(0, commit - m.status.applied) : null));
  const widest = Math.max(1, ...lags.filter((l) => l !== null));
  const body = $("members").tBodies[0];
  body.replaceChildren();
  const problems = [];
  doc.members.forEach((m, i) => {
    const st = m.status;
    const role = m.reachable && st ? st.role : "unreachable";
    const row = el("tr");
    row.dataset.member = m.id;
    row.dataset.role = role;
    row.dataset.reachable = String(m.reachable);
    if (leader && m.id === leader.id) row.className = "leader";
    if (!m.reachable) row.className = "unreachable";
    const name = el("td", m.id);
    if (m.learner) name.append(el("span", m.non_voter ? "non-voter" : "learner", "mark"));
    if (m.id === doc.node) name.append(el("span", "this node", "mark"));
    row.append(name, el("td", role, "role"));
    row.append(el("td", st ? st.term : "-"), el("td", st ? st.commit : "-"), el("td", st ? st.applied : "-"));
    const lagCell = el("td");
    if (lags[i] !== null) {
      const bar = el("span", null, "lag");
      const fill = el("i");
      fill.style.width = Math.round((100 * lags[i]) / widest) + "%";
      bar.append(fill);
      lagCell.append(bar, document.createTextNode(String(lags[i])));
      if (lags[i] >= BEHIND_ENTRIES) problems.push(m.id + " is " + lags[i] + " entries behind");
    } else {
      lagCell.textContent = "-";
    }
    row.append(lagCell, el("td", m.reachable ? "yes" : "no: " + (m.error || "unknown"), "reason"));
    if (!m.reachable) problems.push(m.id + " is unreachable (" + (m.error || "no answer") + ")");
    const expiry = certificateNote(m, doc.time);
    const certCell = el("td", expiry ? expiry.short : "-", expiry && expiry.warn ? "warn" : null);
    if (expiry) certCell.title = expiry.text;
    if (expiry && expiry.warn) problems.push(m.id + "'s certificate " + expiry.text);
    const remove = el("button", "Remove", "small");
    remove.type = "button";
    remove.dataset.remove = m.id;
    remove.addEventListener("click", () =>
      act("/cluster/members/" + encodeURIComponent(m.id), "Remove " + m.id + " from the cluster?", "DELETE"));
    const removeCell = el("td");
    removeCell.append(remove);
    row.append(certCell, removeCell);
    body.append(row);
  });
  if (!leader) problems.push("no leader is known: an election may be under way");
  const banner = $("banner");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");
  noteElections(reachable);
  noteLeader(leader);
  noteRates(doc);
  noteLatency(doc.write_latency || []);
}

// A member's certificate: "expires in N days (date)", flagged within CERT_WARN_DAYS.
function certificateNote(member, now) {
  const cert = member.status && member.status.certificate;
  if (!cert || typeof cert.not_after_unix !== "number") return null;
  const days = Math.floor((cert.not_after_unix - now) / DAY_S);
  const date = cert.not_after.slice(0, 10);
  if (days < 0) return { warn: true, short: "expired", text: "has expired (" + date + ")" };
  return {
    warn: days < CERT_WARN_DAYS,
    short: days + " days",
    text: "expires in " + days + " days (" + date + ")",
  };
}

function addToTimeline(text, kind, leader) {
  const item = el("li", new Date().toLocaleTimeString() + "  " + text, kind);
  item.dataset.kind = kind;
  item.dataset.leader = leader || "";
  $("timeline").prepend(item);
  while ($("timeline").children.length > 50) $("timeline").lastChild.remove();
}

// Elections the page saw: a member standing as a (pre-)candidate, or a term that rose.
function noteElections(reachable) {
  reachable.forEach((m) => {
    const role = m.status.role;
    if (role !== "candidate" && role !== "pre-candidate") return;
    const key = m.id + "@" + m.status.term;
    if (state.campaigns.has(key)) return;
    state.campaigns.add(key);
    addToTimeline(m.id + " stands for election (" + role + ", term " + m.status.term + ")", "election", "");
  });
  const highest = Math.max(0, ...reachable.map((m) => m.status.term));
  if (state.highestTerm && highest > state.highestTerm) {
    addToTimeline("election: term " + state.highestTerm + " → " + highest, "election", "");
  }
  state.highestTerm = Math.max(state.highestTerm, highest);
}

function noteLeader(leader) {
  const id = leader ? leader.id : null;
  const term = leader ? leader.status.term : null;
  if (id === state.leader && (id === null || term === state.term)) return;
  state.leader = id;
  state.term = term;
  addToTimeline(id ? id + " leads in term " + term : "no leader", "leader", id);
}

function noteRates(doc) {
  const now = doc.time;
  if (state.counts && now > state.at) {
    const span = now - state.at;
    push(state.writes, Math.max(0, (doc.requests.writes - state.counts.writes) / span));
    push(state.reads, Math.max(0, (doc.requests.reads - state.counts.reads) / span));
    chart("writes", state.writes);
    chart("reads", state.reads);
  }
  state.counts = doc.requests;
  state.at = now;
}

// p50/p99 of the writes answered between two polls, from the difference of two cumulative
// histograms, interpolated linearly inside the bucket (as Prometheus's histogram_quantile).
function noteLatency(buckets) {
  const previous = state.buckets;
  state.buckets = buckets;
  if (!previous) return;
  const before = new Map(previous.map(([bound, count]) => [String(bound), count]));
  const delta = buckets.map(([bound, count]) => [bound, count - (before.get(String(bound)) || 0)]);
  const total = delta.length ? delta[delta.length - 1][1] : 0;
  const p50 = total > 0 ? quantile(delta, total, 0.5) : null;
  const p99 = total > 0 ? quantile(delta, total, 0.99) : null;
  push(state.p50, p50);
  push(state.p99, p99);
  $("p50-now").textContent = p50 === null ? "-" : p50.toFixed(1);
  $("p99-now").textContent = p99 === null ? "-" : p99.toFixed(1);
  drawLines($("latency-chart"), [state.p50, state.p99], ["p50", "p99"]);
}

function quantile(delta, total, q) {
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of delta) {
    if (count >= rank) {
      if (bound === null) return lower * 1000; // beyond the last finite bound
      const inBucket = count - below;
      const part = inBucket > 0 ? (rank - below) / inBucket : 1;
      return (lower + (bound - lower) * part) * 1000;
    }
    if (bound !== null) lower = bound;
    below = count;
  }
  return lower * 1000;
}

function drawLines(svg, seriesList, names) {
  const values = seriesList.flat().filter((v) => v !== null);
  const top = Math.max(1, ...values);
  seriesList.forEach((series, n) => {
    const offset = CHART_POINTS - series.length;
    const points = series
      .map((v, i) => (v === null ? null : ((offset + i) * 120) / (CHART_POINTS - 1) + "," + (40 - (38 * v) / top)))
      .filter((p) => p !== null);
    if (points.length === 1) points.unshift(stepBack(points[0]));
    let line = svg.querySelector("polyline." + names[n]);
    if (!line) {
      line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("class", names[n]);
      svg.append(line);
    }
    line.setAttribute("points", points.join(" "));
  });
}

// A lone point draws nothing: give it a short segment ending at it.
function stepBack(point) {
  const [x, y] = point.split(",").map(Number);
  return Math.max(0, x - 2) + "," + y;
}

function push(series, value) {
  series.push(value);
  if (series.length > CHART_POINTS) series.shift();
}

function chart(name, series) {
  $(name + "-now").textContent = series[series.length - 1].toFixed(1);
  const top = Math.max(1, ...series);
  const offset = CHART_POINTS - series.length; // the newest point at the right edge
  const points = series
    .map((v, i) => ((offset + i) * 120) / (CHART_POINTS - 1) + "," + (40 - (38 * v) / top));
  if (points.length === 1) points.unshift(stepBack(points[0]));
  const svg = $(name + "-chart");
  let line = svg.querySelector("polyline");
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.append(line);
  }
  line.setAttribute("points", points.join(" "));
}

// -- the query console --------------------------------------------------------------------

async function run(kind) {
  const text = $("sql").value.trim();
  if (!text) return;
  const form = $("form").value;
  const paramsText = $("params").value.trim();
  remember({ text, params: paramsText, form });
  $("query-error").hidden = true;
  $("result").replaceChildren();
  $("query-meta").textContent = "running…";
  let body = text;
  const headers = {};
  if (form === "sql") {
    const statement = { sql: text };
    if (paramsText) {
      let params;
      try { params = JSON.parse(paramsText); } catch (e) { params = undefined; }
      if (params === null || typeof params !== "object") {
        $("query-meta").textContent = "";
        showError("the parameters must be a JSON list ([1, \"x\"]) or object ({\"name\": \"x\"})");
        return;
      }
      statement.params = params;
    }
    body = JSON.stringify({ statements: [statement] });
    headers["Content-Type"] = "application/json";
  }
  let answer;
  try {
    if (kind === "query") {
      const query = new URLSearchParams({ consistency: $("consistency").value });
      answer = await api("/query?" + query, { method: "POST", body, headers });
    } else {
      answer = await api("/command", { method: "POST", body, headers });
    }
  } catch (e) {
    $("query-meta").textContent = "";
    showError("the node did not answer: " + e.message);
    return;
  }
  const index = answer.headers.get("Graft-Index");
  $("query-meta").textContent = answer.status + (index ? " at index " + index : "");
  if (answer.status !== 200) {
    showError(errorText(answer));
    return;
  }
  if (form === "sql") showStatementResult(answer.text);
  else showResult(answer.text);
}

function showError(text) {
  $("query-error").textContent = text;
  $("query-error").hidden = false;
}

// The JSON form's answer to one statement: rows with their declared types, what a write
// changed, or the statement's own error (a 200: the command was committed all the same).
function showStatementResult(text) {
  let result = null;
  try { result = JSON.parse(text).results[0]; } catch (e) { /* shown raw below */ }
  if (!result) {
    $("result").append(el("pre", text));
    return;
  }
  if (typeof result.error === "string") {
    showError("the statement failed: " + result.error +
      (/one statement|second statement/i.test(result.error) ? " (use the raw form for a script)" : ""));
    return;
  }
  if (Array.isArray(result.columns)) {
    const types = Array.isArray(result.types) ? result.types : [];
    showTable(result.columns, types, result.values || []);
    return;
  }
  $("result").append(el("p", result.rows_affected + " row(s) affected; last insert id " +
    (result.last_insert_id === null ? "none" : result.last_insert_id), "muted"));
}

function cellText(value) {
  if (value === null) return "NULL";
  if (typeof value === "object" && typeof value.blob === "string") {
    return "BLOB (" + Math.floor((value.blob.length * 3) / 4) + " bytes)";
  }
  return value;
}

function showTable(columns, types, rows, note) {
  const table = el("table");
  table.id = "result-table";
  const head = el("tr");
  columns.forEach((c, i) => {
    const th = el("th", c);
    th.dataset.column = c;
    th.dataset.type = types[i] || "";
    if (types[i]) th.append(el("span", types[i], "type"));
    head.append(th);
  });
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  rows.forEach((r) => {
    const row = el("tr");
    r.forEach((v) => row.append(el("td", cellText(v))));
    table.tBodies[0].append(row);
  });
  $("result").append(table, el("p", rows.length + " row(s)" + (note ? "  " + note : ""), "muted"));
}

function showResult(text) {
  let doc = null;
  try { doc = JSON.parse(text); } catch (e) { /* not JSON: shown as text */ }
  if (doc && Array.isArray(doc.columns) && Array.isArray(doc.rows)) {
    const extra = Object.assign({}, doc);
    delete extra.columns;
    delete extra.rows;
    showTable(doc.columns, [], doc.rows, Object.keys(extra).length ? JSON.stringify(extra) : "");
  } else {
    $("result").append(el("pre", doc === null ? text : JSON.stringify(doc, null, 2)));
  }
}

// The history keeps what was run, with its parameters and form, in this browser only.
function remember(entry) {
  const same = (h) => h.text === entry.text && h.params === entry.params && h.form === entry.form;
  const history = loadHistory().filter((h) => !same(h));
  history.unshift(entry);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history.slice(0, 30)));
  showHistory();
}

function loadHistory() {
  try {
    const stored = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return stored
      .map((h) => (typeof h === "string" ? { text: h, params: "", form: "raw" } : h))
      .filter((h) => h && typeof h.text === "string");
  } catch (e) { return []; }
}

function showHistory() {
  const list = $("history");
  list.replaceChildren();
  loadHistory().forEach((h) => {
    const item = el("li", h.text + (h.params ? "   ← " + h.params : ""));
    item.addEventListener("click", () => {
      $("sql").value = h.text;
      $("params").value = h.params || "";
      $("form").value = h.form === "raw" ? "raw" : "sql";
    });
    list.append(item);
  });
}

// -- operator actions (admin tokens) -------------------------------------------------------

async function act(path, question, method = "POST", body = "") {
  if (!confirm(question)) return;
  $("action-result").textContent = "…";
  try {
    const answer = await api(path, { method, body });
    $("action-result").textContent = answer.status === 200 ? "done: " + answer.text : errorText(answer);
  } catch (e) {
    $("action-result").textContent = "the node did not answer: " + e.message;
  }
}

// Saves this node's latest snapshot as a file. Without a token the browser streams it
// straight to disk; with one (a header a link cannot carry) it is fetched into memory first,
// so for a large database `graft snapshot save` is the better tool.
async function download() {
  if (!confirm("Download this node's latest snapshot?")) return;
  $("action-result").textContent = "…";
  const token = sessionStorage.getItem(TOKEN_KEY);
  try {
    const head = await fetch("/cluster/snapshot", {
      method: "HEAD", cache: "no-store",
      headers: token ? { Authorization: "Bearer " + token } : {},
    });
    if (head.status !== 200) {
      const answer = await api("/cluster/snapshot");
      $("action-result").textContent = errorText(answer);
      return;
    }
    const name = "graft-" + (state.node || "node") + "-" +
      (head.headers.get("Graft-Snapshot-Index") || "latest") + ".snapshot";
    let href = "/cluster/snapshot";
    if (token) {
      const response = await fetch(href, { cache: "no-store", headers: { Authorization: "Bearer " + token } });
      href = URL.createObjectURL(await response.blob());
    }
    const link = el("a");
    link.href = href;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    $("action-result").textContent = "done: saving " + name + " (" + head.headers.get("Content-Length") + " bytes)";
  } catch (e) {
    $("action-result").textContent = "the node did not answer: " + e.message;
  }
}

function addMember(event) {
  event.preventDefault();
  const member = {
    id: $("add-id").value.trim(),
    host: $("add-host").value.trim(),
    ports: { p2p: Number($("add-p2p").value), api: Number($("add-api").value) },
  };
  act("/cluster/members", "Add " + member.id + " (" + member.host + ") to the cluster? " +
    "It joins as a learner and is promoted once its node runs and has caught up " +
    "(docs/operations.md, adding a node).",
  "POST", JSON.stringify(member));
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("token-form").hidden = true;
  });
  $("run-query").addEventListener("click", () => run("query"));
  $("run-command").addEventListener("click", () => run("command"));
  $("sql").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run("query");
  });
  $("transfer").addEventListener("click", () =>
    act("/cluster/leader", "Hand the leadership to the most caught-up other voter?"));
  $("snapshot").addEventListener("click", () =>
    act("/cluster/snapshot", "Take a snapshot on this node now and compact its log?"));
  $("download").addEventListener("click", download);
  $("add-member").addEventListener("submit", addMember);
  showHistory();
  poll();
}

start();
