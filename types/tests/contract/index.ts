// The declarations' own test: `tsc -p types/tests/contract` (or `npm run check` in types/).
// Every line marked `@ts-expect-error` is a misuse the declarations must reject: if one is
// accepted, the directive is unused and tsc fails. Everything else must type-check.
// Never loaded by the service (it is not under plugins/core).
import type {
  AgentConfig,
  ChatResult,
  ConnectorPlugin,
  GatewayContext,
  GatewayPlugin,
  PluginConfigField,
  PluginContext,
  PluginMetadata,
  RouteHandler,
} from "./types";
import type {
  AuthType,
  ConnectorConfig,
  ConnectorResponse,
  HealthStatus,
  MessageMetadata,
  RequestTemplate,
  ResponseMetadata,
  ResponseTemplate,
  TokenUsage,
} from "../base";
import { BaseConnector, ConnectorError } from "../base";
import PluginLoaderDefault, { PluginLoader } from "./loader";
import { PluginLoader as AliasedLoader } from "@/lib/connectors/plugins/loader";
import type { ConnectorPlugin as AliasedPlugin } from "@/lib/connectors/plugins/types";
import { ConnectorError as AliasedError } from "@/lib/connectors/base";

// Krawall: a connector plugin with every hook ------------------------------------------------

const schema: PluginConfigField[] = [
  { key: "model", label: "Model", type: "string", required: true, description: "Model id." },
  { key: "mode", label: "Mode", type: "select", required: false, default: "a", description: "", options: [{ label: "A", value: "a" }] },
];

const full: ConnectorPlugin = {
  id: "contract",
  name: "Contract",
  description: "Every hook.",
  version: "1.0.0",
  priority: 10,
  compatibleConnectors: ["HTTP_REST", "SSE", "WEBSOCKET", "GRPC"],
  configSchema: schema,
  async initialize(context) {
    context.state.count = 0;
    const type: "HTTP_REST" | "SSE" | "WEBSOCKET" | "GRPC" = context.connector.type;
    void type;
  },
  async onConnect(config: ConnectorConfig, context: PluginContext): Promise<ConnectorConfig> {
    const auth: AuthType = config.authType;
    const request: RequestTemplate = config.requestTemplate;
    const response: ResponseTemplate = config.responseTemplate;
    void [auth, request, response, context.targetId];
    return { ...config, protocolConfig: { ...config.protocolConfig, headers: { "x-session": context.sessionId } } };
  },
  beforeSend(message, metadata, context) {
    const index: number | undefined = metadata?.messageIndex;
    const when = metadata ? new Date(metadata.timestamp) : new Date();
    context.state.count = (context.state.count as number) + 1;
    return { message: `${message} (${index}, ${when.toISOString()})`, metadata: { tag: context.pluginConfig?.model } };
  },
  async afterReceive(response: ConnectorResponse, _context) {
    const meta: ResponseMetadata = response.metadata;
    const usage: TokenUsage | undefined = meta.tokenUsage;
    return { response: { ...response, content: response.content.trim() }, metadata: { tokens: usage?.totalTokens ?? 0 } };
  },
  onChunk(chunk) {
    return chunk.includes("secret") ? "" : undefined;
  },
  async onDisconnect(context) {
    console.log("closing", context.sessionId);
  },
  onError(error, hookName, context) {
    console.error(hookName, error.message, context.state);
  },
};

PluginLoader.register(full);
PluginLoaderDefault.register(full);
AliasedLoader.register(full as AliasedPlugin);
const removed: boolean = PluginLoader.unregister("contract");
const found: ConnectorPlugin | undefined = PluginLoader.get("contract");
const lists: ConnectorPlugin[][] = [PluginLoader.getAll(), PluginLoader.getAllSorted(), PluginLoader.getCompatible("SSE")];
const metadata: PluginMetadata[] = PluginLoader.listMetadata();
const fields: PluginConfigField[] | undefined = PluginLoader.getPluginConfig("contract");
const problems: string[] = PluginLoader.validatePluginConfig("contract", { model: "m" });
const registered: boolean = PluginLoader.isRegistered("contract");
PluginLoader.clear();
void [removed, found, lists, metadata, fields, problems, registered];

// ../base's runtime values and types.
const failure = new ConnectorError("upstream said no", new Error("cause"), 503);
const status: number | undefined = failure.statusCode;
const aliased: Error = new AliasedError("x");
const health: HealthStatus = { healthy: true, latencyMs: 3, timestamp: new Date() };
const stamped: MessageMetadata = { sessionId: "s", messageIndex: 0, timestamp: "2025-01-01T00:00:00Z" };
void [status, aliased, health, stamped];
abstract class Shell extends BaseConnector {}
void Shell;

// Krawall misuses.
PluginLoader.register({
  id: "bad",
  name: "Bad",
  description: "",
  version: "1.0.0",
  // @ts-expect-error: not a connector type
  compatibleConnectors: ["HTTP-REST"],
});
// @ts-expect-error: `description` and `version` are missing
PluginLoader.register({ id: "bad", name: "Bad", compatibleConnectors: [] });
const wrongHooks: ConnectorPlugin = {
  id: "wrong",
  name: "Wrong",
  description: "",
  version: "1.0.0",
  compatibleConnectors: ["SSE"],
  // @ts-expect-error: beforeSend must hand on { message }
  async beforeSend(message: string) {
    return { msg: message };
  },
  // @ts-expect-error: afterReceive must hand on { response }
  afterReceive(response: ConnectorResponse) {
    return response;
  },
};
void wrongHooks;
const badField: PluginConfigField = {
  key: "k",
  label: "K",
  // @ts-expect-error: not a field type
  type: "text",
  required: false,
  description: "",
};
void badField;
// @ts-expect-error: the loader is not constructed
new PluginLoader();
// @ts-expect-error: unregister takes an id
PluginLoader.unregister(full);
// @ts-expect-error: validatePluginConfig answers a list of messages, not a boolean
const valid: boolean = PluginLoader.validatePluginConfig("contract", {});
void valid;
// @ts-expect-error: the base connector is abstract
new BaseConnector();
declare const someContext: PluginContext;
// @ts-expect-error: the connector runs in Rust; hooks get its type only
someContext.connector.sendMessage("hi");
declare const someMetadata: MessageMetadata;
// @ts-expect-error: the timestamp may be a string: wrap it in new Date(...)
someMetadata.timestamp.getTime();

// Open Astra: a gateway plugin ----------------------------------------------------------------

const logRequests: RouteHandler = (req, _res, next) => {
  console.log(req.method, req.path, req.get("user-agent"));
  next();
};

const agent: AgentConfig = {
  displayName: "Helper",
  model: { provider: "anthropic", modelId: "claude-sonnet-4-5", temperature: 0.2, fallback: { provider: "ollama", modelId: "llama3" } },
  systemPromptTemplate: "Today is {{date}}.",
  tools: { allow: ["contract-*"], deny: [] },
};

const gateway: GatewayPlugin = {
  name: "contract",
  version: "1.0.0",
  async init(ctx: GatewayContext) {
    ctx.logger.info("init", { at: Date.now() });
    ctx.logger.debug("debug");
    ctx.app.use(logRequests);
    ctx.app.use("/items", (_req, _res, next) => next());
    ctx.app.get("/items/:id", (req, res) => {
      res.status(200).set("x-id", req.params.id).json({ id: req.params.id, q: req.query.q ?? null });
    });
    ctx.app.post("/items", async (req) => ({ created: req.body }));
    ctx.app.put("/items/:id", (_req, res) => res.sendStatus(204));
    ctx.app.patch("/items/:id", (_req, res) => res.set({ "x-a": 1, "x-b": true }).send("patched"));
    ctx.app.delete("/items/:id", (_req, res) => res.status(204).end());
    ctx.app.get("/hooks/*rest", (req) => req.params.rest, { absolute: true });
    ctx.app.post("/webhooks/in", () => ({ ok: true }), { absolute: true, public: true });

    const bus = ctx.getEventBus();
    const onLoaded = (data: { plugin: string }, event: { event: string; timestamp: string }) => {
      console.log(data.plugin, event.event, event.timestamp);
    };
    bus.on("plugin.loaded", onLoaded);
    bus.on("*", async (data) => console.log(data));
    bus.off("plugin.loaded", onLoaded);
    bus.emit("contract.ready", { at: Date.now() });
    bus.emit("contract.bare");

    ctx.registerTool({
      name: "contract-add",
      description: "Adds two numbers.",
      parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"], additionalProperties: false },
      execute: (params: { a: number; b: number }, { logger }) => {
        logger.info("adding");
        return { sum: params.a + params.b };
      },
    });
    ctx.registerAgentConfig("contract-helper", agent);

    const client = ctx.resolveClient({ provider: "openai", modelId: "gpt-4o-mini" });
    const answer: ChatResult = await client.chat(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      { temperature: 0, maxTokens: 64, tools: [{ name: "contract-add", description: "Adds.", parameters: { type: "object" } }] }
    );
    const again = await client.chat({ messages: [{ role: "user", content: "Again" }] });
    let streamed = "";
    for await (const chunk of client.chat([{ role: "user", content: "Stream" }], { stream: true })) {
      if (chunk.type === "delta") streamed += chunk.text;
      else console.log(chunk.result.usage.totalTokens);
    }
    for await (const chunk of client.chat({ messages: [{ role: "user", content: "Again" }], stream: true })) {
      if (chunk.type === "done") streamed += chunk.result.content;
    }
    console.log(streamed);
    console.log(answer.content, answer.toolCalls.length, answer.usage.totalTokens, again.provider, client.config.modelId);
  },
  start() {},
  async stop() {},
};
void gateway;

// Open Astra misuses.
declare const ctx: GatewayContext;
// @ts-expect-error: a handler is a function
ctx.app.get("/x", { handler: true });
// @ts-expect-error: there is no app.all
ctx.app.all("/x", () => 1);
// @ts-expect-error: not a method of res
ctx.app.get("/x", (_req, res) => res.jsonp({}));
// @ts-expect-error: the route options are { absolute, public }
ctx.app.get("/x", () => 1, { exact: true });
// @ts-expect-error: the tool needs execute
ctx.registerTool({ name: "t", description: "d", parameters: {} });
// @ts-expect-error: not a provider
ctx.resolveClient({ provider: "openia", modelId: "gpt-4o" });
// @ts-expect-error: modelId is required
ctx.registerAgentConfig("a", { model: { provider: "openai" } });
// @ts-expect-error: not a chat role
void ctx.resolveClient({ provider: "openai", modelId: "m" }).chat([{ role: "human", content: "hi" }]);
// @ts-expect-error: a streamed chat is iterated, not a promise
void ctx.resolveClient({ provider: "openai", modelId: "m" }).chat([{ role: "user", content: "hi" }], { stream: true }).then;
// @ts-expect-error: there is no ctx.events (that is the native API)
ctx.events();
// @ts-expect-error: the logger has no trace level
ctx.logger.trace("x");
// @ts-expect-error: event data is unknown until its type is given
ctx.getEventBus().on("plugin.*", (data) => data.plugin);
// @ts-expect-error: name, version and init are required
const incomplete: GatewayPlugin = { name: "x" };
void incomplete;

// Sandbox globals ---------------------------------------------------------------------------

async function globalsInUse(): Promise<void> {
  const controller = new AbortController();
  const timer: number = setTimeout((reason: string) => controller.abort(reason), 1000, "slow");
  clearTimeout(timer);
  const tick = setInterval(() => undefined, 10);
  clearInterval(tick);
  queueMicrotask(() => undefined);
  const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(5000)]);
  signal.addEventListener("abort", () => console.warn("aborted", signal.reason), { once: true });
  signal.throwIfAborted();
  void AbortSignal.abort(new DOMException("stop", "AbortError"));

  const headers = new Headers({ "content-type": "application/json" });
  headers.append("x-trace", crypto.randomUUID());
  const response: Response = await fetch(new URL("/v1/items?x=1", "https://example.com"), {
    method: "POST",
    headers,
    body: JSON.stringify({ a: 1 }),
    signal,
  });
  const body: null = response.body;
  const text: string = response.ok ? await response.text() : `${response.status} ${response.statusText}`;
  const bytes = new Uint8Array(await new Response("abc").arrayBuffer());
  const request = new Request("https://example.com", { method: "GET", headers: [["a", "b"]] });
  void [body, text, bytes, request.url, Response.json({ ok: true }).status, headers.get("x-trace")];

  const encoded = new TextEncoder().encode("héllo");
  const decoded: string = new TextDecoder("utf-8", { fatal: true }).decode(encoded);
  const params = new URLSearchParams({ q: "x" });
  params.append("page", "2");
  const url = new URL("https://example.com/search");
  url.search = params.toString();
  const digest = await crypto.subtle.digest("SHA-256", encoded);
  const random = crypto.getRandomValues(new Uint32Array(4));
  const copy = structuredClone({ when: new Date(), list: [1, 2] });
  const started: number = performance.now();
  const event = new Event("ping");
  const target = new EventTarget();
  target.addEventListener("ping", (e) => console.debug(e.type));
  target.dispatchEvent(event);
  const parsed: URL | null = URL.parse("not a url");
  const cookies: string[] = response.headers.getSetCookie();
  const raw: Uint8Array = await response.clone().bytes();
  const manual = await fetch("https://example.com/old", { redirect: "manual" });
  const custom = new CustomEvent<{ id: number }>("job", { detail: { id: 7 } });
  const abortCode: number = new DOMException("late", { name: "TimeoutError" }).code + DOMException.ABORT_ERR;
  void [parsed, cookies, raw, manual.redirected, custom.detail.id, abortCode, performance.timeOrigin];
  void [decoded, url.searchParams.get("q"), btoa(atob("aGk=")), digest.byteLength, random[0], copy.when, started];
}
void globalsInUse;

async function globalsMisused(): Promise<void> {
  const response = await fetch("https://example.com");
  // @ts-expect-error: Response.body is null: there are no streams
  response.body.getReader();
  // @ts-expect-error: timers return numbers, not Node.js Timeout objects
  setTimeout(() => undefined, 10).unref();
  // @ts-expect-error: no Node.js globals
  process.env.HOME;
  // @ts-expect-error: no CommonJS
  require("fs");
  // @ts-expect-error: no Buffer
  Buffer.from("x");
  // @ts-expect-error: no DOM
  document.title;
  // @ts-expect-error: no window
  window.location;
  // @ts-expect-error: no Blob
  new Blob(["x"]);
  // @ts-expect-error: no FormData
  new FormData();
  // @ts-expect-error: no ReadableStream
  new ReadableStream();
  // @ts-expect-error: no localStorage
  localStorage.getItem("x");
  // @ts-expect-error: the console has no table
  console.table([]);
  // @ts-expect-error: no XMLHttpRequest
  new XMLHttpRequest();
  // @ts-expect-error: digest takes a known algorithm
  await crypto.subtle.digest("MD5", new Uint8Array(1));
  // @ts-expect-error: AbortSignal is not constructed directly
  new AbortSignal();
  // @ts-expect-error: no CORS modes (or credentials, cache, referrer)
  await fetch("https://example.com", { mode: "cors" });
  // @ts-expect-error: crypto.subtle has digest only
  await crypto.subtle.sign("HMAC", new Uint8Array(1), new Uint8Array(1));
}
void globalsMisused;
