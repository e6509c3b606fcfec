// Another system, in Node.js: submit an Agent Engine task and follow it to its end, with the `nats` package.
//
//   npm install
//   node submit-and-follow.mjs --server nats://127.0.0.1:4222 --creds acme-billing.cred.json \
//       --workflow research-review --input '{"brief": "Compare event-sourced workflow engines."}' \
//       [--key order-42] [--timeout 300]
//
// Without --creds (a server without authentication) name --tenant (and --user, default "node-client").
// Prints one JSON line per event of the task; exits 0 when it succeeded, 1 when it failed or was cancelled,
// 2 when the engine rejected the request, 3 when no end came within --timeout seconds.
// The subjects are the engine's subject map (docs/events.md, contracts/subjects.py):
//   ae.<tenant>.task.requested.<user>           a request, under its sender's name
//   ae.<tenant>.>                                every event of the tenant (filtered here by task id)
//   aerpc.tenant.<tenant>.router.<action>        queries the router answers about this tenant only

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { connect, headers, nkeyAuthenticator, StringCodec } from "nats";

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: "nats://127.0.0.1:4222" },
    creds: { type: "string" },
    tenant: { type: "string" },
    user: { type: "string" },
    workflow: { type: "string" },
    input: { type: "string", default: "{}" },
    key: { type: "string" },
    timeout: { type: "string", default: "300" },
  },
});
if (!args.workflow) {
  console.error("--workflow is required");
  process.exit(64);
}

const cred = args.creds ? JSON.parse(readFileSync(args.creds, "utf8")) : null;
const tenant = cred?.tenant ?? args.tenant;
const user = cred?.user ?? args.user ?? "node-client";
if (!tenant) {
  console.error("name the tenant: --creds FILE (a tenant credential) or --tenant NAME");
  process.exit(64);
}

const subjects = {
  request: `ae.${tenant}.task.requested.${user}`,
  events: `ae.${tenant}.>`,
  show: `aerpc.tenant.${tenant}.router.task.show`,
};
const ENDS = { "task.succeeded": 0, "task.failed": 1, "task.cancelled": 1, "task.rejected": 2 };

const nc = await connect({
  servers: args.server,
  name: "agent-engine-node-example",
  ...(cred ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(cred.seed)), inboxPrefix: `_INBOX.${tenant}.${user}` } : {}),
});
const sc = StringCodec();
const print = (line) => console.log(JSON.stringify(line));

const timer = setTimeout(() => {
  console.error(`no end of the task within ${args.timeout}s`);
  process.exit(3);
}, Number(args.timeout) * 1000);

async function finish(code) {
  clearTimeout(timer);
  await nc.drain();
  process.exit(code);
}

// subscribe first, so no event of the task is missed
const events = nc.subscribe(subjects.events);

const taskId = randomUUID();
// a CloudEvents 1.0 event in structured mode, contract version 2 (docs/events.md): the engine's attributes
// are the extensions tenant, taskid, correlationid and schemaversion
const request = {
  specversion: "1.0",
  id: randomUUID(),
  source: "node-example",
  type: "task.requested",
  time: new Date().toISOString(),
  datacontenttype: "application/json",
  dataschema: "urn:agent-engine:events:task.requested:v2",
  tenant,
  taskid: taskId,
  correlationid: taskId,
  schemaversion: 2,
  data: {
    workflow: args.workflow,
    input: JSON.parse(args.input),
    requested_by: user,
    ...(args.key ? { idempotency_key: args.key } : {}),
  },
};
const h = headers();
h.set("Ae-Task-Id", taskId);
// JetStream: the server confirms the request is stored; msgID is the Nats-Msg-Id header (the envelope id)
const ack = await nc.jetstream().publish(subjects.request, sc.encode(JSON.stringify(request)), { msgID: request.id, headers: h });
print({ published: subjects.request, task_id: taskId, stream: ack.stream, seq: ack.seq });

let following = taskId;
for await (const msg of events) {
  let event;
  try {
    event = JSON.parse(sc.decode(msg.data));
  } catch {
    continue; // not an event envelope: not this task's news
  }
  if (event.taskid !== following) continue;
  print({ type: event.type, task_id: event.taskid, node: event.data?.node, reason: event.data?.reason });
  if (event.type === "task.deduplicated") {
    // the key names a task already: follow that one (it may have ended: ask the router)
    following = event.data.original_task_id;
    const shown = JSON.parse(sc.decode((await nc.request(subjects.show, sc.encode(JSON.stringify({ task_id: following })), { timeout: 10000 })).data));
    const end = `task.${shown.status}`;
    if (end in ENDS) {
      print({ type: end, task_id: following, reason: shown.reason, already: true });
      await finish(ENDS[end]);
    }
  } else if (event.type in ENDS) {
    await finish(ENDS[event.type]);
  }
}
