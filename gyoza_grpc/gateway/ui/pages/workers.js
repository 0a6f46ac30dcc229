// /ui/workers: each worker's state, heartbeat, lease, CPU and RAM, each GPU's VRAM as a used
// of total bar, and the runs it holds. Read again every 2 s (a worker heartbeats every few).
import { html, render, nothing } from "../vendor/lit-html/lit-html.js";
import { repeat } from "../vendor/lit-html/directives/repeat.js";
import { get } from "../api.js";
import { number, problem, until, when } from "../format.js";

const REFRESH_MS = 2000;

function usage(label, used, total, unit) {
  return html`<div class="usage">
    <span class="usage-name">${label}</span>
    <meter min="0" max=${total || 1} value=${used} aria-label=${`${label} used`}></meter>
    <span class="usage-text">${number(used)} used · ${number(total - used)} free of ${number(total)}${unit}</span>
  </div>`;
}

function gpus(w) {
  if (!w.resources.gpus.length) return html`<span class="muted">none</span>`;
  const free = new Map(w.free.gpus.map((g) => [g.gpu_id, g.vram_mb]));
  return w.resources.gpus.map((g) => {
    const used = g.vram_mb - (free.get(g.gpu_id) ?? g.vram_mb);
    return usage(`GPU ${g.gpu_id} VRAM`, used, g.vram_mb, " MiB");
  });
}

const row = (w) => html`<tr class="worker-${w.state.toLowerCase()}">
  <th scope="row"><code>${w.worker_id}</code></th>
  <td><span class="state state-${w.state.toLowerCase()}">${w.state}</span></td>
  <td>${when(w.last_heartbeat)}</td>
  <td>${w.state === "ALIVE" ? until(w.lease_expires_at) : html`<span class="muted">expired</span>`}</td>
  <td class="resources">
    ${usage("CPU", w.resources.cpu - w.free.cpu, w.resources.cpu, "")}
    ${usage("RAM", w.resources.ram_mb - w.free.ram_mb, w.resources.ram_mb, " MiB")}
  </td>
  <td class="resources">${gpus(w)}</td>
  <td>${w.held.length
    ? html`<ul class="held">${w.held.map(
        (h) => html`<li><a class="id" href="/ui/runs/${encodeURIComponent(h.run_id)}" title=${h.run_id}
          aria-label=${`run ${h.run_id}, attempt ${h.attempt}`}>…${h.run_id.slice(-12)}</a> · attempt ${h.attempt}</li>`,
      )}</ul>`
    : html`<span class="muted">nothing</span>`}</td>
  <td>${w.tags.join(", ")}</td>
</tr>`;

export function mount(root) {
  const s = { workers: null, error: null };

  async function load() {
    try {
      s.workers = (await get("/workers")).workers;
      s.error = null;
    } catch (err) {
      s.error = err;
    }
    draw();
    setTimeout(load, REFRESH_MS);
  }

  function draw() {
    const alive = s.workers ? s.workers.filter((w) => w.state === "ALIVE").length : 0;
    render(
      html`<div class="title-row"><h1>Workers</h1>
          ${s.workers ? html`<p class="muted">${alive} alive of ${s.workers.length}</p>` : nothing}</div>
        ${problem(s.error)}
        <table class="workers">
          <thead><tr>
            <th scope="col">Worker</th><th scope="col">State</th><th scope="col">Last heartbeat</th>
            <th scope="col">Lease</th><th scope="col">CPU and RAM</th><th scope="col">GPUs</th>
            <th scope="col">Holds</th><th scope="col">Tags</th>
          </tr></thead>
          <tbody>${repeat(s.workers || [], (w) => w.worker_id, row)}</tbody>
        </table>
        ${s.workers && !s.workers.length ? html`<p class="empty">No worker has heartbeated yet.</p>` : nothing}`,
      root,
    );
  }
  draw();
  load();
}
