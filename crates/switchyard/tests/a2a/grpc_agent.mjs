// An echo agent served over gRPC (`lf.a2a.v1.A2AService`, h2c) by the official
// `@a2a-js/sdk`, for the gateway's gRPC pass-through test.
//
// "slow N": N artifact chunks 0.3 s apart, then completed (so a stream is visibly streamed);
// anything else: completed at once with the artifact "echo: <text>".
//
// Usage: node grpc_agent.mjs PORT   (prints "ready" once listening)

import * as grpc from "@grpc/grpc-js";
import { TaskState } from "@a2a-js/sdk";
import {
  AgentEvent,
  DefaultRequestHandler,
  InMemoryTaskStore,
} from "@a2a-js/sdk/server";
import { A2AService, grpcService, UserBuilder } from "@a2a-js/sdk/server/grpc";

const port = process.argv[2];
const text = (t) => ({ content: { $case: "text", value: t } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const card = {
  name: "gRPC Echo Agent",
  description: "Echoes what it is told, over gRPC",
  version: "1.0.0",
  supportedInterfaces: [
    { url: `127.0.0.1:${port}`, protocolBinding: "GRPC", protocolVersion: "1.0", tenant: "" },
  ],
  capabilities: { streaming: true, pushNotifications: false, extensions: [] },
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [],
  securitySchemes: {},
  securityRequirements: [],
  signatures: [],
};

const executor = {
  async execute(ctx, bus) {
    const said = ctx.userMessage.parts
      .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
      .join("");
    const base = { id: ctx.taskId, contextId: ctx.contextId, history: [], artifacts: [] };
    const status = (state) => ({ state, message: undefined, timestamp: new Date().toISOString() });
    bus.publish(AgentEvent.task({ ...base, status: status(TaskState.TASK_STATE_WORKING) }));
    const chunks = said.startsWith("slow") ? Number(said.split(" ")[1] ?? 3) : 0;
    for (let i = 0; i < chunks; i++) {
      await sleep(300);
      bus.publish(
        AgentEvent.artifactUpdate({
          taskId: ctx.taskId,
          contextId: ctx.contextId,
          artifact: { artifactId: "stream", name: "", description: "", parts: [text(`chunk ${i}`)], extensions: [] },
          append: i > 0,
          lastChunk: i === chunks - 1,
        }),
      );
    }
    if (chunks === 0) {
      bus.publish(
        AgentEvent.artifactUpdate({
          taskId: ctx.taskId,
          contextId: ctx.contextId,
          artifact: { artifactId: "echo", name: "echo", description: "", parts: [text(`echo: ${said}`)], extensions: [] },
          append: false,
          lastChunk: true,
        }),
      );
    }
    bus.publish(
      AgentEvent.statusUpdate({
        taskId: ctx.taskId,
        contextId: ctx.contextId,
        status: status(TaskState.TASK_STATE_COMPLETED),
      }),
    );
    bus.finished();
  },
  async cancelTask(taskId, bus) {
    bus.finished();
  },
};

const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), executor);
const server = new grpc.Server();
server.addService(
  A2AService,
  grpcService({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }),
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log("ready");
});
