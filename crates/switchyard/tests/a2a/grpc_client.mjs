// The official `@a2a-js/sdk` gRPC client (generated `lf.a2a.v1.A2AService` stubs) through
// the gateway: send, stream (the first event well before the last), get. One JSON line per
// check; exits non-zero on the first failure.
//
// Usage: node grpc_client.mjs GATEWAY_HOST:PORT

import { randomUUID } from "node:crypto";
import { ClientFactory, ClientFactoryOptions } from "@a2a-js/sdk/client";
import { GrpcTransportFactory } from "@a2a-js/sdk/client/grpc";
import { Role, TaskState } from "@a2a-js/sdk";

const [target] = process.argv.slice(2);
const report = (check, fields = {}) => console.log(JSON.stringify({ check, ...fields }));
const assert = (cond, message) => {
  if (!cond) {
    console.error(`assertion failed: ${message}`);
    process.exit(1);
  }
};
const message = (t) => ({
  message: {
    messageId: randomUUID(),
    contextId: "",
    taskId: "",
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: t }, metadata: undefined, filename: "", mediaType: "" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  },
  configuration: undefined,
  metadata: undefined,
  tenant: "",
});

const card = {
  name: "through the gateway",
  supportedInterfaces: [{ url: target, protocolBinding: "GRPC", protocolVersion: "1.0", tenant: "" }],
  capabilities: { streaming: true },
};
const factory = new ClientFactory(
  ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new GrpcTransportFactory()],
    preferredTransports: ["GRPC"],
  }),
);
const client = await factory.createFromAgentCard(card);

const sent = await client.sendMessage(message("hello over grpc"));
const task = sent.payload?.value ?? sent;
assert(task.status?.state === TaskState.TASK_STATE_COMPLETED, `send: ${JSON.stringify(sent)}`);
const echoed = task.artifacts.flatMap((a) => a.parts).map((p) => p.content.value).join("");
assert(echoed === "echo: hello over grpc", `send artifact: ${echoed}`);
report("send", { task: task.id });

const started = Date.now();
const times = [];
let last;
let id = "";
for await (const ev of client.sendMessageStream(message("slow 3"))) {
  times.push(Date.now() - started);
  const v = ev.payload?.value;
  id ||= v?.id || v?.taskId || "";
  if (ev.payload?.$case === "statusUpdate") last = v.status.state;
}
assert(times.length >= 4, `stream: ${times.length} events`);
assert(times[times.length - 1] - times[0] >= 600, `stream arrived at once: ${times}`);
assert(last === TaskState.TASK_STATE_COMPLETED, `stream final ${last}`);
report("stream", { first_ms: times[0], last_ms: times[times.length - 1] });

const got = await client.getTask({ id, tenant: "", historyLength: undefined });
assert(got.id === id && got.status.state === TaskState.TASK_STATE_COMPLETED, `get ${JSON.stringify(got)}`);
report("get");
report("done");
