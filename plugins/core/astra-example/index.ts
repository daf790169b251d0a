// An Open Astra gateway plugin: discovered from plugins/core/<dir>/index.ts, init(ctx) at boot,
// start() once HTTP listens, stop() on shutdown (in reverse order).
import type { GatewayContext, GatewayPlugin } from "./types";

interface Greeting {
  greeted: string;
  at: number;
}

let seen = 0;
let ctxRef: GatewayContext | undefined;

export default {
  name: "astra-example",
  version: "1.0.0",
  description: "Counts plugin events and registers a tool, an agent and a route.",

  async init(ctx: GatewayContext): Promise<void> {
    ctxRef = ctx;
    ctx.logger.info("astra-example initialising");
    ctx.getEventBus().on("plugin.*", (data: { plugin?: string }) => {
      seen += 1;
      if (data?.plugin !== "astra-example") {
        ctx.getEventBus().emit("astra-example.saw", { plugin: data?.plugin, seen });
      }
    });
    ctx.registerTool({
      name: "greet",
      description: "Greets someone by name.",
      parameters: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
      execute: async (params: { name: string }): Promise<Greeting> => ({ greeted: params.name, at: Date.now() }),
    });
    ctx.registerAgentConfig("greeter", {
      displayName: "Greeter",
      model: { provider: "openai", modelId: "gpt-4o", temperature: 0.2, maxOutputTokens: 256 },
      systemPromptTemplate: "You greet people.",
      tools: { allow: ["greet"], deny: [] },
    });
    ctx.app.get("/hello", (_req, res) => res.json({ hello: "world" }));
  },

  start(): void {
    ctxRef?.logger.info(`astra-example started after ${seen} plugin events`);
  },

  stop(): void {
    ctxRef?.logger.info("astra-example stopping");
  },
} satisfies GatewayPlugin;
