// A Node.js client of gyoza-grpc, on @grpc/grpc-js and @grpc/proto-loader: the cross-stack check.
//
//   node check.mjs HOST:PORT INCLUDE_DIR...
//
// The include dirs hold gyoza/v1/*.proto and google/rpc/*.proto (Struct's fields keep their
// camelCase names: protobufjs defines the well-known types itself). It creates a run, watches it
// (waiting for the stream's headers before it adds any event, as a grpc-js client may), drives
// it to COMPLETED and reads the stream to its end; keeps a quiet watch open on a channel that
// pings every second; and decodes the google.rpc.Status details of two refusals. It prints one
// JSON object with what it saw; tests/test_node_client.py checks it. Exit 1 on any failure.
import { accessSync } from "node:fs";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const [target, ...includeDirs] = process.argv.slice(2);
const QUIET_WATCH_MS = 7000; // grpc-js used to lose a quiet watch after 5 s of 1 s pings

const loaderOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs };
const gyoza = grpc.loadPackageDefinition(protoLoader.loadSync("gyoza/v1/runs.proto", loaderOptions)).gyoza.v1;

const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => {
  for (const dir of includeDirs) {
    const path = `${dir}/${target}`;
    try {
      accessSync(path);
      return path;
    } catch {}
  }
  return target;
};
rpcTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
rpcTypes.resolveAll();
const Status = rpcTypes.lookupType("google.rpc.Status");

function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 10_000 }, (err, reply) => (err ? reject(err) : resolve(reply))),
  );
}

// The rich error: its code and message, and every detail of its google.rpc.Status, unpacked.
function richError(err) {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  if (!bin) throw new Error(`no grpc-status-details-bin on ${err.code} ${err.details}`);
  const status = Status.decode(bin);
  const details = status.details.map((any) => {
    const type = rpcTypes.lookupType(any.type_url.split("/").pop());
    return { type: type.fullName.slice(1), ...type.toObject(type.decode(any.value), { defaults: true }) };
  });
  return { code: err.code, codeName: grpc.status[err.code], message: status.message, details };
}

async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    return richError(err);
  }
  throw new Error("the call was not refused");
}

// Watches a run from the start; resolves with the events once the stream ends with OK.
function watchToTheEnd(client, runId, onHeaders) {
  return new Promise((resolve, reject) => {
    const events = [];
    const call = client.WatchEvents({ run_id: runId });
    call.on("metadata", () => onHeaders().catch((err) => { call.cancel(); reject(err); }));
    call.on("data", (item) => item.event && events.push(item.event));
    call.on("error", reject);
    call.on("status", (s) => s.code === grpc.status.OK && resolve(events));
  });
}

async function main() {
  const runs = new gyoza.RunService(target, grpc.credentials.createInsecure());
  const created = (await unary(runs, "CreateRun", {
    image: "node-check",
    inputs: { fields: { x: { numberValue: 21 } } },
  })).run;

  const started = Date.now();
  let headersMs = -1;
  const events = await watchToTheEnd(runs, created.id, async () => {
    headersMs = Date.now() - started;
    await unary(runs, "AddEvent", { run_id: created.id, type: "EVENT_TYPE_STARTED", attempt: 1 });
    await unary(runs, "AddEvent", { run_id: created.id, type: "EVENT_TYPE_PROGRESS", attempt: 1, progress: 50 });
    await unary(runs, "AddEvent", {
      run_id: created.id,
      type: "EVENT_TYPE_COMPLETED",
      attempt: 1,
      payload: { fields: { outputs: { structValue: { fields: { y: { numberValue: 42 } } } } } },
    });
  });
  const done = (await unary(runs, "GetRun", { id: created.id })).run;

  const locked = await refusal(unary(runs, "AddEvent", { run_id: created.id, type: "EVENT_TYPE_INFO", msg: "late" }));
  const invalid = await refusal(unary(runs, "CreateRun", { image: "" }));

  // A quiet watch on a channel pinging every second, as the grpc-js client did.
  const pinging = new gyoza.RunService(target, grpc.credentials.createInsecure(), {
    "grpc.keepalive_time_ms": 1000,
    "grpc.keepalive_timeout_ms": 5000,
  });
  const quiet = (await unary(pinging, "CreateRun", { image: "node-quiet" })).run;
  const quietWatch = await new Promise((resolve) => {
    const call = pinging.WatchEvents({ run_id: quiet.id, after: quiet.last_seq });
    let ended = null;
    call.on("data", () => {});
    call.on("error", (err) => (ended = { code: err.code, codeName: grpc.status[err.code], details: err.details }));
    setTimeout(() => {
      call.cancel();
      resolve({ openForMs: QUIET_WATCH_MS, ended });
    }, QUIET_WATCH_MS);
  });
  pinging.close();
  runs.close();

  console.log(JSON.stringify({
    runId: created.id,
    headersMs,
    events: events.map((e) => ({ seq: Number(e.seq), type: e.type, state: e.state })),
    final: { state: done.state, attempt: done.current_attempt, y: done.outputs.fields.y?.numberValue },
    locked,
    invalid,
    quietWatch,
  }));
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
