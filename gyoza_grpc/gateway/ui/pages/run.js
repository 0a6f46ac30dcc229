// /ui/runs/{id}: a run's fields, inputs and outputs, attempts, and its timeline, growing as
// events arrive (GET /runs/{id}/events/stream, resumed after the last event shown), with the
// Cancel and Retry buttons the key's role allows.
import { html, render, nothing } from "../vendor/lit-html/lit-html.js";
import { repeat } from "../vendor/lit-html/directives/repeat.js";
import { follow, get, post } from "../api.js";
import { TERMINAL, at, json, liveStatus, problem, progress, state, when } from "../format.js";

// Events after which the run's other fields (attempt, worker, outputs) change.
const LIFECYCLE = new Set(["ASSIGNED", "STARTED", "COMPLETED", "FAILED", "CANCELLED", "RETRIED"]);

export function mount(root, ctx, runId) {
  const base = `/runs/${encodeURIComponent(runId)}`;
  const s = { run: null, attempts: [], events: [], live: "connecting", error: null, busy: "" };
  let stop = null;
  let refreshing = 0;

  const lastId = () => (s.events.length ? s.events[s.events.length - 1].id : null);

  async function refresh() {
    const [run, attempts] = await Promise.all([get(base), get(`${base}/attempts`)]);
    const last = lastId();
    if (last !== null && run.last_event_id < last) {
      refreshSoon(); // read before the latest event shown: read again
      return;
    }
    s.run = run;
    s.attempts = attempts;
    draw();
  }

  function refreshSoon() {
    clearTimeout(refreshing);
    refreshing = setTimeout(() => refresh().catch((err) => ((s.error = err), draw())), 100);
  }

  async function timeline() {
    let after = null;
    for (;;) {
      const page = await get(`${base}/events?scope=run${after === null ? "" : `&after=${after}`}`);
      s.events.push(...page.events);
      if (!page.has_more || !page.events.length) return;
      after = page.events[page.events.length - 1].id;
    }
  }

  function watch() {
    if (stop) stop();
    stop = follow({
      open: () => `${base}/events/stream${lastId() === null ? "" : `?after=${lastId()}`}`,
      onFrame(frame) {
        if (frame.event === "end") {
          refreshSoon();
          return "end";
        }
        if (frame.event !== "message") return undefined;
        const e = JSON.parse(frame.data);
        if (lastId() !== null && e.id <= lastId()) return undefined;
        s.events.push(e);
        if (s.run) {
          s.run.state = e.state;
          if (e.type === "PROGRESS") s.run.progress = e.msg;
        }
        if (LIFECYCLE.has(e.type)) refreshSoon();
        draw();
        return undefined;
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
  }

  async function act(name) {
    s.busy = name;
    s.error = null;
    draw();
    try {
      s.run = await post(`${base}/${name}`);
      refreshSoon();
      if (name === "retry") watch(); // the stream ended with the run: follow it again
    } catch (err) {
      s.error = err;
    }
    s.busy = "";
    draw();
  }

  function actions(run) {
    const terminal = TERMINAL.has(run.state);
    const cancel = !terminal && ctx.can("RunService/CancelRun");
    const retry = terminal && ctx.can("RunService/RetryRun");
    return html`<div class="actions">
      ${cancel ? html`<button type="button" class="danger" ?disabled=${!!s.busy} @click=${() => act("cancel")}>Cancel</button>` : nothing}
      ${retry ? html`<button type="button" ?disabled=${!!s.busy} @click=${() => act("retry")}>Retry</button>` : nothing}
    </div>`;
  }

  const field = (name, value) => html`<div><dt>${name}</dt><dd>${value}</dd></div>`;
  const dash = html`<span class="muted">—</span>`;

  function fields(r) {
    const c = r.constraints;
    const needs = [
      c.cpu !== null ? `${c.cpu} CPU` : "",
      c.ram_mb !== null ? `${c.ram_mb} MiB RAM` : "",
      c.vram_mb !== null ? `${c.vram_mb} MiB VRAM` : "",
      c.gpu_id !== null ? `GPU ${c.gpu_id}` : "",
    ].filter(Boolean);
    const summary = r.execution_summary;
    return html`<dl class="fields">
      ${field("State", state(r.state))}
      ${field("Image", html`<code>${r.image}</code>`)}
      ${field("Definition", r.op_definition ? `${r.op_definition}@${r.definition_version}` : dash)}
      ${field("Priority", r.priority)}
      ${field("Attempt", `${r.current_attempt} of ${r.retry_policy.max_attempts || 1}`)}
      ${field("Worker", summary.worker_id || dash)}
      ${field("GPU", summary.gpu_id !== null ? summary.gpu_id : dash)}
      ${field("Needs", needs.length ? needs.join(", ") : dash)}
      ${field("Created", at(r.created_at))}
      ${field("Updated", when(r.updated_at))}
      ${r.next_attempt_at ? field("Next attempt", at(r.next_attempt_at)) : nothing}
      ${field("Topic", r.event_delivery ? r.event_delivery.topic : dash)}
      ${r.request_id ? field("Request id", html`<code>${r.request_id}</code>`) : nothing}
      ${summary.error_message ? field("Error", html`<span class="error-text">${summary.error_message}</span>`) : nothing}
    </dl>`;
  }

  function detail(e) {
    const p = e.payload || {};
    switch (e.type) {
      case "PROGRESS":
        return progress(e.msg, `Progress at event ${e.id}`);
      case "ASSIGNED":
      case "STARTED": {
        const parts = [p.worker_id ? `worker ${p.worker_id}` : "", p.gpu_id !== undefined ? `GPU ${p.gpu_id}` : ""];
        return [e.msg, ...parts].filter(Boolean).join(", ");
      }
      case "FAILED":
        return html`<span class="error-text">${p.error_message || e.msg}</span>`;
      default:
        return e.msg;
    }
  }

  const eventRow = (e) => html`<tr class="event-${e.type.toLowerCase()}">
    <td class="num">${e.id}</td>
    <td>${at(e.t)}</td>
    <td class="num">${e.attempt}</td>
    <td>${e.type}</td>
    <td>${state(e.state)}</td>
    <td>${detail(e)}${Object.keys(e.payload || {}).length ? html`<details><summary>payload</summary><pre>${json(e.payload)}</pre></details>` : nothing}</td>
  </tr>`;

  const attemptRow = (a) => html`<tr>
    <td class="num">${a.attempt}</td>
    <td>${state(a.state)}</td>
    <td>${progress(a.progress, `Progress of attempt ${a.attempt}`)}</td>
    <td>${a.execution_summary.worker_id || dash}</td>
    <td>${a.execution_summary.gpu_id !== null ? a.execution_summary.gpu_id : dash}</td>
    <td>${at(a.started_at)}</td>
    <td>${at(a.finished_at)}</td>
    <td class="num">${a.execution_summary.duration_ms ? `${(a.execution_summary.duration_ms / 1000).toFixed(1)} s` : ""}</td>
    <td>${a.execution_summary.error_message ? html`<span class="error-text">${a.execution_summary.error_message}</span>` : ""}</td>
  </tr>`;

  function draw() {
    const r = s.run;
    render(
      html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Runs</a> /</nav>
        <div class="title-row">
          <h1>Run <code>${runId}</code></h1>
          ${r ? state(r.state) : nothing}
          ${r ? actions(r) : nothing}
          ${liveStatus(s.live)}
        </div>
        ${problem(s.error)}
        ${r
          ? html`${progress(r.progress, "Progress")}
            ${fields(r)}
            <div class="docs">
              <section aria-labelledby="inputs-title"><h2 id="inputs-title">Inputs</h2><pre>${json(r.inputs)}</pre></section>
              <section aria-labelledby="outputs-title"><h2 id="outputs-title">Outputs</h2><pre>${json(r.outputs)}</pre></section>
            </div>
            <section aria-labelledby="attempts-title">
              <h2 id="attempts-title">Attempts</h2>
              <table class="attempts">
                <thead><tr><th scope="col">Attempt</th><th scope="col">State</th><th scope="col">Progress</th>
                  <th scope="col">Worker</th><th scope="col">GPU</th><th scope="col">Started</th>
                  <th scope="col">Finished</th><th scope="col">Duration</th><th scope="col">Error</th></tr></thead>
                <tbody>${repeat(s.attempts, (a) => a.attempt, attemptRow)}</tbody>
              </table>
            </section>`
          : nothing}
        <section aria-labelledby="timeline-title">
          <h2 id="timeline-title">Timeline</h2>
          <table class="timeline">
            <thead><tr><th scope="col">Event</th><th scope="col">Time</th><th scope="col">Attempt</th>
              <th scope="col">Type</th><th scope="col">State</th><th scope="col">Details</th></tr></thead>
            <tbody>${repeat(s.events, (e) => e.id, eventRow)}</tbody>
          </table>
          ${r && !s.events.length ? html`<p class="empty">No events yet.</p>` : nothing}
        </section>`,
      root,
    );
  }

  draw();
  (async () => {
    try {
      await refresh();
      await timeline();
      draw();
      watch();
    } catch (err) {
      s.error = err;
      s.live = "ended";
      draw();
    }
  })();
  setInterval(draw, 5000);
}
