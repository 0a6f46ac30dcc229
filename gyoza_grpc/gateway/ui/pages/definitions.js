// /ui/definitions: op definitions (the latest version of each) and a form that creates a run
// from one. The form sends what was typed (a number when it reads as one, JSON for lists and
// objects when it parses) and shows each of the server's field violations beside its field.
import { html, render, nothing } from "../vendor/lit-html/lit-html.js";
import { repeat } from "../vendor/lit-html/directives/repeat.js";
import { ApiError, get, post } from "../api.js";
import { problem, when } from "../format.js";

const PAGE_SIZE = 50;

const specText = (name, spec) =>
  `${name}: ${spec.type}${spec.required ? ", required" : ""}${"default" in spec ? `, default ${JSON.stringify(spec.default)}` : ""}`;

// What a field's text means for an input of `type`: the value to send, or undefined to
// leave it out (empty). Text that is not what the type needs is sent as text, and the server
// says what is wrong with it.
function value(type, text) {
  if (text === "") return undefined;
  if (type === "int" || type === "float") {
    const n = Number(text);
    return text.trim() !== "" && Number.isFinite(n) ? n : text;
  }
  if (type === "bool") return text === "true" ? true : text === "false" ? false : text;
  if (type === "list" || type === "object") {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

// The field a violation names: "inputs.size" (the server's), or a 422's ["body", "priority"].
function violations(err) {
  const out = new Map();
  const add = (field, text) => out.set(field, out.has(field) ? `${out.get(field)}; ${text}` : text);
  if (err.status === 422 && Array.isArray(err.body.detail)) {
    for (const d of err.body.detail) add(d.loc.slice(1).join("."), d.msg);
  }
  for (const v of err.body.errors || []) add(v.field, v.description);
  return out;
}

export function mount(root, ctx) {
  const query = new URLSearchParams(location.search);
  const s = {
    definitions: [],
    hasMore: false,
    error: null,
    chosen: null, // the definition the form is for
    versions: [],
    errors: new Map(), // field -> the violation shown beside it
    formError: null,
    created: null,
    busy: false,
  };
  const canCreate = ctx.can("DefinitionService/CreateRunFromDefinition");

  async function more() {
    const last = s.definitions[s.definitions.length - 1];
    const params = new URLSearchParams({ limit: PAGE_SIZE });
    if (last) params.set("starting_after", last.id);
    try {
      const page = await get(`/definitions?${params}`);
      s.definitions.push(...page.definitions);
      s.hasMore = page.has_more;
    } catch (err) {
      s.error = err;
    }
    draw();
  }

  async function choose(name) {
    s.errors = new Map();
    s.formError = null;
    s.created = null;
    try {
      s.versions = (await get(`/definitions/${encodeURIComponent(name)}/versions`)).definitions;
      s.chosen = s.versions[0];
    } catch (err) {
      s.error = err;
    }
    history.replaceState(null, "", `/ui/definitions?name=${encodeURIComponent(name)}`);
    draw();
    root.querySelector("#run-form h2")?.focus();
  }

  function pickVersion(event) {
    s.chosen = s.versions.find((d) => d.version === event.target.value) || s.versions[0];
    s.errors = new Map();
    draw();
  }

  async function submit(event) {
    event.preventDefault();
    const d = s.chosen;
    const form = new FormData(event.target);
    const inputs = {};
    for (const [name, spec] of Object.entries(d.input_specs)) {
      const v = value(spec.type, form.get(`input-${name}`) ?? "");
      if (v !== undefined) inputs[name] = v;
    }
    const body = { inputs, version: d.version };
    const priority = value("int", form.get("priority") || "");
    if (priority !== undefined) body.priority = priority;
    s.busy = true;
    s.errors = new Map();
    s.formError = null;
    s.created = null;
    draw();
    try {
      s.created = await post(`/definitions/${encodeURIComponent(d.id)}/runs`, body);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      s.errors = violations(err);
      const shown = new Set(["priority", "version", ...Object.keys(d.input_specs).map((n) => `inputs.${n}`)]);
      const elsewhere = [...s.errors].filter(([field]) => !shown.has(field));
      if (!s.errors.size || elsewhere.length) s.formError = err;
    }
    s.busy = false;
    draw();
    const invalid = root.querySelector("#run-form [aria-invalid='true']");
    if (invalid) invalid.focus();
  }

  // A labelled control with its violation beside it (and as its accessible description).
  function control(id, field, label, hint, input) {
    const error = s.errors.get(field);
    return html`<div class="field">
      <label for=${id}>${label}</label>
      ${input(error ? "true" : "false", `${id}-hint ${id}-error`)}
      <span id="${id}-hint" class="hint">${hint}</span>
      <span id="${id}-error" class="field-error">${error || ""}</span>
    </div>`;
  }

  function inputControl(name, spec) {
    const id = `input-${name}`;
    const hint = `${spec.type}${spec.required ? ", required" : ", optional"}${"default" in spec ? `; default ${JSON.stringify(spec.default)}` : ""}`;
    const multi = spec.type === "list" || spec.type === "object";
    return control(id, `inputs.${name}`, name, hint, (invalid, describedBy) =>
      spec.type === "bool"
        ? html`<select id=${id} name=${id} aria-invalid=${invalid} aria-describedby=${describedBy}>
            <option value="">${spec.required ? "choose" : "not given"}</option>
            <option>true</option><option>false</option>
          </select>`
        : multi
          ? html`<textarea id=${id} name=${id} rows="3" aria-invalid=${invalid} aria-describedby=${describedBy}
              placeholder=${spec.type === "list" ? "[1, 2]" : '{"key": "value"}'}></textarea>`
          : html`<input id=${id} name=${id} aria-invalid=${invalid} aria-describedby=${describedBy}
              inputmode=${spec.type === "int" ? "numeric" : spec.type === "float" ? "decimal" : "text"}>`,
    );
  }

  function form() {
    const d = s.chosen;
    if (!d) return nothing;
    const specs = Object.entries(d.input_specs);
    return html`<section id="run-form" class="run-form" aria-labelledby="run-form-title">
      <h2 id="run-form-title" tabindex="-1">New run of ${d.id}</h2>
      <p class="muted">Image <code>${d.image}</code>${d.description ? ` · ${d.description}` : ""}</p>
      ${canCreate
        ? html`<form @submit=${submit} novalidate>
            ${control("version", "version", "Version", "the latest unless chosen", (invalid, describedBy) =>
              html`<select id="version" name="version" aria-invalid=${invalid} aria-describedby=${describedBy} @change=${pickVersion}>
                ${s.versions.map((v) => html`<option ?selected=${v.version === d.version}>${v.version}</option>`)}
              </select>`)}
            ${specs.length ? repeat(specs, ([name]) => `${d.version}/${name}`, ([name, spec]) => inputControl(name, spec)) : html`<p class="muted">This op takes no inputs.</p>`}
            ${control("priority", "priority", "Priority", "higher runs first; 5 when empty", (invalid, describedBy) =>
              html`<input id="priority" name="priority" inputmode="numeric" aria-invalid=${invalid} aria-describedby=${describedBy}>`)}
            <button type="submit" ?disabled=${s.busy}>Create run</button>
          </form>`
        : html`<p>This key may not create runs.</p>`}
      ${problem(s.formError)}
      ${s.created
        ? html`<p class="ok" role="status">Created run <a class="id" href="/ui/runs/${encodeURIComponent(s.created.id)}">${s.created.id}</a></p>`
        : nothing}
    </section>`;
  }

  const row = (d) => html`<tr>
    <th scope="row"><code>${d.id}</code></th>
    <td>${d.version}</td>
    <td><code>${d.image}</code></td>
    <td>${Object.keys(d.input_specs).length
      ? html`<ul class="specs">${Object.entries(d.input_specs).map(([n, spec]) => html`<li>${specText(n, spec)}</li>`)}</ul>`
      : html`<span class="muted">none</span>`}</td>
    <td>${d.description}</td>
    <td>${when(d.created_at)}</td>
    <td><button type="button" aria-label=${`New run of ${d.id}`} @click=${() => choose(d.id)}>New run</button></td>
  </tr>`;

  function draw() {
    render(
      html`<div class="title-row"><h1>Definitions</h1></div>
        ${problem(s.error)}
        <table class="definitions">
          <thead><tr>
            <th scope="col">Name</th><th scope="col">Latest version</th><th scope="col">Image</th>
            <th scope="col">Inputs</th><th scope="col">Description</th><th scope="col">Added</th>
            <th scope="col"><span class="visually-hidden">Actions</span></th>
          </tr></thead>
          <tbody>${repeat(s.definitions, (d) => d.id, row)}</tbody>
        </table>
        ${s.hasMore ? html`<button type="button" @click=${more}>More definitions</button>` : nothing}
        ${form()}`,
      root,
    );
  }

  draw();
  more().then(() => {
    const name = query.get("name");
    if (name) choose(name);
  });
}
