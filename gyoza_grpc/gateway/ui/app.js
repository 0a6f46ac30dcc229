// The dashboard: asks the gateway what the session's key may do, asks for a key when one is
// needed, then shows the page the address names. Every page reads the gateway's REST routes
// (the ones /openapi.json describes) and nothing else.
import { html, render } from "./vendor/lit-html/lit-html.js";
import { ApiError, get, session } from "./api.js";

const main = document.getElementById("main");
const who = document.getElementById("who");

const PAGES = [
  [/^\/ui\/?$/, "runs", () => import("./pages/runs.js")],
  [/^\/ui\/runs\/([^/]+)$/, "runs", () => import("./pages/run.js")],
  [/^\/ui\/workers$/, "workers", () => import("./pages/workers.js")],
  [/^\/ui\/definitions$/, "definitions", () => import("./pages/definitions.js")],
];

function keyForm(message) {
  const submit = async (event) => {
    event.preventDefault();
    session.key = new FormData(event.target).get("key").trim();
    await start();
  };
  render(
    html`<section class="key">
      <h1>API key</h1>
      <p>This server needs an API key. It is kept for this browser session only.</p>
      <form @submit=${submit}>
        <label for="key">API key</label>
        <input id="key" name="key" type="password" autocomplete="off" required
          aria-describedby="key-error" aria-invalid=${message ? "true" : "false"}>
        <button type="submit">Use key</button>
        <p id="key-error" class="field-error">${message || ""}</p>
      </form>
    </section>`,
    main,
  );
  main.querySelector("#key").focus();
}

function header(caller) {
  const forget = () => {
    session.key = "";
    location.reload();
  };
  render(
    caller.keys_required
      ? html`<span>Key role: <strong>${caller.role}</strong></span>
          <button type="button" class="link" @click=${forget}>Forget key</button>`
      : html`<span class="muted">No API keys on this server</span>`,
    who,
  );
}

async function start() {
  let caller;
  try {
    caller = await get("/access");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const refused = session.key ? "That key was refused." : "";
      session.key = "";
      render(html``, who);
      keyForm(refused);
      return;
    }
    render(html`<p class="error" role="alert">The gateway did not answer: ${err.message}</p>`, main);
    return;
  }
  header(caller);
  const methods = new Set(caller.methods);
  const ctx = {
    caller,
    // Whether the key may call a gRPC method, e.g. can("RunService/CancelRun").
    can: (method) => methods.has(`/gyoza.v1.${method}`),
  };
  for (const [pattern, nav, load] of PAGES) {
    const match = pattern.exec(location.pathname);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.page === nav) link.setAttribute("aria-current", "page");
    }
    render(html``, main);
    const page = await load();
    page.mount(main, ctx, ...match.slice(1).map(decodeURIComponent));
    return;
  }
  render(html`<h1>Not found</h1><p>No page at ${location.pathname}.</p>`, main);
}

start();
