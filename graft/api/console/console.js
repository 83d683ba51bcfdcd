// The Graft web console. It calls only the node that served it: /ui/cluster (every member's
// status, gathered by that node), /query, /command and the /cluster admin routes.
"use strict";

const TOKEN_KEY = "graft-token";
const HISTORY_KEY = "graft-history";
const POLL_MS = 1000;
const BEHIND_ENTRIES = 100; // a member this many entries behind the leader's commit is flagged
const CHART_POINTS = 120;

const $ = (id) => document.getElementById(id);
const state = { leader: null, term: null, counts: null, at: null, writes: [], reads: [] };

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
    row.append(lagCell, el("td", m.reachable ? "yes" : "no: " + (m.error || "unknown")));
    if (!m.reachable) problems.push(m.id + " is unreachable (" + (m.error || "no answer") + ")");
    body.append(row);
  });
  if (!leader) problems.push("no leader is known: an election may be under way");
  const banner = $("banner");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");
  noteLeader(leader);
  noteRates(doc);
}

function noteLeader(leader) {
  const id = leader ? leader.id : null;
  const term = leader ? leader.status.term : null;
  if (id === state.leader && (id === null || term === state.term)) return;
  state.leader = id;
  state.term = term;
  const item = el("li", new Date().toLocaleTimeString() + "  " +
    (id ? id + " leads in term " + term : "no leader"));
  item.dataset.leader = id || "";
  $("timeline").prepend(item);
  while ($("timeline").children.length > 50) $("timeline").lastChild.remove();
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

function push(series, value) {
  series.push(value);
  if (series.length > CHART_POINTS) series.shift();
}

function chart(name, series) {
  $(name + "-now").textContent = series[series.length - 1].toFixed(1);
  const top = Math.max(1, ...series);
  const offset = CHART_POINTS - series.length; // the newest point at the right edge
  const points = series
    .map((v, i) => ((offset + i) * 120) / (CHART_POINTS - 1) + "," + (40 - (38 * v) / top))
    .join(" ");
  const svg = $(name + "-chart");
  let line = svg.querySelector("polyline");
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.append(line);
  }
  line.setAttribute("points", points);
}

// -- the query console --------------------------------------------------------------------

async function run(kind) {
  const text = $("sql").value.trim();
  if (!text) return;
  remember(text);
  $("query-error").hidden = true;
  $("result").replaceChildren();
  $("query-meta").textContent = "running…";
  let answer;
  try {
    if (kind === "query") {
      const params = new URLSearchParams({ consistency: $("consistency").value });
      answer = await api("/query?" + params, { method: "POST", body: text });
    } else {
      answer = await api("/command", { method: "POST", body: text });
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
  showResult(answer.text);
}

function showError(text) {
  $("query-error").textContent = text;
  $("query-error").hidden = false;
}

function showResult(text) {
  let doc = null;
  try { doc = JSON.parse(text); } catch (e) { /* not JSON: shown as text */ }
  if (doc && Array.isArray(doc.columns) && Array.isArray(doc.rows)) {
    const table = el("table");
    table.id = "result-table";
    const head = el("tr");
    doc.columns.forEach((c) => head.append(el("th", c)));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    doc.rows.forEach((r) => {
      const row = el("tr");
      r.forEach((v) => row.append(el("td", v === null ? "NULL" : v)));
      table.tBodies[0].append(row);
    });
    const extra = Object.assign({}, doc);
    delete extra.columns;
    delete extra.rows;
    const note = el("p", doc.rows.length + " row(s)" +
      (Object.keys(extra).length ? "  " + JSON.stringify(extra) : ""), "muted");
    $("result").append(table, note);
  } else {
    $("result").append(el("pre", doc === null ? text : JSON.stringify(doc, null, 2)));
  }
}

function remember(text) {
  const history = loadHistory().filter((h) => h !== text);
  history.unshift(text);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history.slice(0, 30)));
  showHistory();
}

function loadHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch (e) { return []; }
}

function showHistory() {
  const list = $("history");
  list.replaceChildren();
  loadHistory().forEach((h) => {
    const item = el("li", h);
    item.addEventListener("click", () => { $("sql").value = h; });
    list.append(item);
  });
}

// -- operator actions (admin tokens) -------------------------------------------------------

async function act(path, question) {
  if (!confirm(question)) return;
  $("action-result").textContent = "…";
  try {
    const answer = await api(path, { method: "POST", body: "" });
    $("action-result").textContent = answer.status === 200 ? "done: " + answer.text : errorText(answer);
  } catch (e) {
    $("action-result").textContent = "the node did not answer: " + e.message;
  }
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
  showHistory();
  poll();
}

start();
