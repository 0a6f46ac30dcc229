// /ui/: runs, newest first, one keyset page at a time, kept live from GET /runs/stream.
//
// The stream is opened first; once it says `ready` the page is read (GET /runs), and the
// changes that came meanwhile are applied on top: of two copies of a run the one with the
// higher last_event_id (then updated_at) wins. The first page also takes new runs and runs
// that enter the state filter; other pages update the runs they show. A resync reads the
// page again.
//
// Above the table, one chip per state with its count (GET /runs/count) for the page's
// filters except the state, so each chip says what choosing it would list. The feed's frames
// are not counted one by one: any frame asks for the counts again, at most once a second,
// never while the tab is hidden, and one request at a time.
import { html, render, nothing } from "../vendor/lit-html/lit-html.js";
import { repeat } from "../vendor/lit-html/directives/repeat.js";
import { follow, get } from "../api.js";
import { STATES, liveStatus, number, problem, progress, state, timeKey, when } from "../format.js";

const PAGE_SIZE = 50;
const FILTERS = ["state", "image", "op_definition", "topic"];
const COUNT_EVERY_MS = 1000;
const STATE_NAMES = {
  PENDING: "Pending",
  ASSIGNED: "Assigned",
  RUNNING: "Running",
  COMPLETED: "Completed",
  FAILED: "Failed",
  CANCELLED: "Cancelled",
};

const newer = (a, b) =>
  a.last_event_id !== b.last_event_id
    ? a.last_event_id > b.last_event_id
    : timeKey(a.updated_at) > timeKey(b.updated_at);

// Newest first: (created_at, id) descending.
const order = (a, b) => {
  const ka = timeKey(a.created_at);
  const kb = timeKey(b.created_at);
  if (ka !== kb) return ka > kb ? -1 : 1;
  return a.id > b.id ? -1 : a.id < b.id ? 1 : 0;
};

export function mount(root) {
  const query = new URLSearchParams(location.search);
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || ""]));
  const cursor = {
    starting_after: query.get("starting_after") || "",
    ending_before: query.get("ending_before") || "",
  };
  const firstPage = !cursor.starting_after && !cursor.ending_before;
  // The filters but the state: the feed's and the counts' (a run changing state stays in them).
  const others = new URLSearchParams();
  for (const f of FILTERS) if (f !== "state" && filters[f]) others.set(f, filters[f]);
  const s = { rows: [], hasMore: false, loaded: false, error: null, live: "connecting" };
  let loading = null;
  let early = []; // changes that came while the page was being read
  let reload = 0;
  // The counts: null until the first answer; `failed` when the last request failed.
  const c = { total: null, by_state: null, failed: false };
  let countWanted = false; // a change came since the last request started
  let counting = false;
  let countTimer = 0;
  let countedAt = 0;

  const matches = (run) => !filters.state || run.state === filters.state;

  async function load() {
    const params = new URLSearchParams({ limit: PAGE_SIZE, view: "basic" });
    for (const f of FILTERS) if (filters[f]) params.set(f, filters[f]);
    for (const [k, v] of Object.entries(cursor)) if (v) params.set(k, v);
    early = [];
    const reading = get(`/runs?${params}`);
    loading = reading;
    try {
      const page = await reading;
      if (loading !== reading) return; // a newer read started meanwhile
      s.rows = page.data;
      s.hasMore = page.has_more;
      s.error = null;
    } catch (err) {
      if (loading !== reading) return;
      s.error = err;
    }
    s.loaded = true;
    loading = null;
    const pending = early;
    early = [];
    pending.forEach(apply);
    draw();
  }

  function reloadSoon() {
    clearTimeout(reload);
    reload = setTimeout(load, 250);
  }

  function apply(run) {
    if (loading) {
      early.push(run);
      return;
    }
    const i = s.rows.findIndex((r) => r.id === run.id);
    if (i >= 0) {
      if (!newer(run, s.rows[i])) return;
      if (matches(run) || !firstPage) {
        s.rows[i] = run;
      } else {
        s.rows.splice(i, 1); // it left the state filter
        if (s.hasMore) reloadSoon(); // an older run moves up into the page
      }
      return;
    }
    if (!firstPage || !matches(run)) return;
    // The first page shows the newest runs down to its last row (all of them if no more).
    const last = s.rows[s.rows.length - 1];
    if (s.hasMore && last && order(run, last) > 0) return;
    s.rows.push(run);
    s.rows.sort(order);
    if (s.rows.length > PAGE_SIZE) {
      s.rows.length = PAGE_SIZE;
      s.hasMore = true;
    }
  }


  // Asks for the counts again: now if none was asked for this second, else when the second is
  // over; if the tab is hidden, when it shows again.
  function countSoon() {
    countWanted = true;
    if (counting || countTimer || document.hidden) return;
    countTimer = setTimeout(readCounts, Math.max(0, countedAt + COUNT_EVERY_MS - Date.now()));
  }

  async function readCounts() {
    countTimer = 0;
    if (document.hidden) return; // visibilitychange asks again
    countWanted = false;
    counting = true;
    countedAt = Date.now();
    try {
      const answer = await get(`/runs/count?${others}`);
      Object.assign(c, answer, { failed: false });
    } catch {
      c.failed = true; // the chips say "–"; the table is not concerned
    }
    counting = false;
    draw();
    if (countWanted) countSoon();
  }

  function stateLink(value) {
    const params = new URLSearchParams(others);
    if (value) params.set("state", value);
    return `/ui/?${params}`;
  }

  function chips() {
    const shown = (n) => (c.failed || n === null || n === undefined ? "–" : number(n));
    const chip = (value, name, n) =>
      html`<li><a class="chip ${value ? `chip-${value.toLowerCase()}` : "chip-all"}"
        href=${stateLink(value)} aria-current=${filters.state === value ? "true" : "false"}
        >${name} <span class="count">${shown(n)}</span></a></li>`;
    return html`<nav class="chips ${c.failed ? "chips-unknown" : ""}" aria-label="Run counts"
      title=${c.failed ? "The counts could not be read" : nothing}>
      <ul>
        ${chip("", "All", c.total)}
        ${STATES.map((x) => chip(x, STATE_NAMES[x], c.by_state ? c.by_state[x] : null))}
      </ul>
    </nav>`;
  }

  function pageLink(name, id) {
    const params = new URLSearchParams();
    for (const f of FILTERS) if (filters[f]) params.set(f, filters[f]);
    if (id) params.set(name, id);
    return `/ui/?${params}`;
  }

  function paging() {
    const first = s.rows[0];
    const last = s.rows[s.rows.length - 1];
    const newerExists = cursor.starting_after || (cursor.ending_before && s.hasMore);
    const olderExists = cursor.ending_before || (!cursor.ending_before && s.hasMore);
    return html`<nav class="paging" aria-label="Pages">
      ${firstPage ? nothing : html`<a href=${pageLink()}>Newest</a>`}
      ${newerExists && first ? html`<a href=${pageLink("ending_before", first.id)}>Newer</a>` : nothing}
      ${olderExists && last ? html`<a href=${pageLink("starting_after", last.id)}>Older</a>` : nothing}
    </nav>`;
  }

  function submit(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(event.target)) if (v) params.set(k, v);
    location.assign(`/ui/?${params}`);
  }

  const row = (r) => {
    const what = r.op_definition ? `${r.op_definition}@${r.definition_version}` : r.image;
    return html`<tr>
      <td><a class="id" href="/ui/runs/${encodeURIComponent(r.id)}">${r.id}</a></td>
      <td>${state(r.state)}</td>
      <td class="what" title=${r.image}>${what}</td>
      <td class="num">${r.priority}</td>
      <td>${progress(r.progress, `Progress of run ${r.id}`)}</td>
      <td class="num">${r.current_attempt}</td>
      <td>${r.execution_summary.worker_id || html`<span class="muted">—</span>`}</td>
      <td>${when(r.created_at)}</td>
    </tr>`;
  };

  function draw() {
    render(
      html`<div class="title-row"><h1>Runs</h1>${liveStatus(s.live)}</div>
        <form class="filters" @submit=${submit} aria-label="Filters">
          <label>State
            <select name="state">
              <option value="" ?selected=${!filters.state}>Any</option>
              ${STATES.map((x) => html`<option ?selected=${filters.state === x}>${x}</option>`)}
            </select>
          </label>
          <label>Image <input name="image" .value=${filters.image}></label>
          <label>Definition <input name="op_definition" .value=${filters.op_definition}></label>
          <label>Topic <input name="topic" .value=${filters.topic}></label>
          <button type="submit">Apply</button>
          <a href="/ui/">Clear</a>
        </form>
        ${chips()}
        ${problem(s.error)}
        <table class="runs">
          <caption class="visually-hidden">Runs, newest first</caption>
          <thead><tr>
            <th scope="col">Run</th><th scope="col">State</th><th scope="col">Image or definition</th>
            <th scope="col">Priority</th><th scope="col">Progress</th><th scope="col">Attempt</th>
            <th scope="col">Worker</th><th scope="col">Created</th>
          </tr></thead>
          <tbody>${repeat(s.rows, (r) => r.id, row)}</tbody>
        </table>
        ${s.loaded && !s.rows.length ? html`<p class="empty">No runs${Object.values(filters).some(Boolean) ? " match these filters" : " yet"}.</p>` : nothing}
        ${paging()}`,
      root,
    );
  }

  follow({
    open: () => `/runs/stream?${others}`,
    onFrame(frame) {
      if (frame.event === "ready" || frame.event === "resync") load();
      else if (frame.event === "run") {
        apply(JSON.parse(frame.data));
        draw();
      } else return;
      countSoon();
    },
    onStatus(status) {
      s.live = status;
      draw();
    },
    onError(err) {
      s.error = err;
      draw();
    },
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && countWanted) countSoon();
  });
  setInterval(draw, 5000); // the ages
  draw();
}
