// `./types` (also `@/lib/connectors/plugins/types`): the two plugin contracts switchyard runs.
//
// - Krawall connector plugins (lib/connectors/plugins/types.ts): `ConnectorPlugin`, the
//   per-session `PluginContext`, `PluginConfigField`, `PluginMetadata`. Registered with
//   `PluginLoader.register` from `./loader`.
// - Open Astra gateway plugins: `GatewayPlugin`, the module's default export, whose
//   `init(ctx)` gets a `GatewayContext` (logger, routes, event bus, tools, agents, models).
//
// At run time `./types` is an empty module: everything here is a type.
/// <reference path="./globals.d.ts" />

import type { ConnectorConfig, ConnectorResponse, ConnectorType, MessageMetadata } from "./base";

export type { ConnectorType } from "./base";

/** A value or a promise of it: every hook may be `async` or not. */
export type Awaitable<T> = T | Promise<T>;

// ---------------------------------------------------------------------------------------------
// Krawall connector plugins
// ---------------------------------------------------------------------------------------------

/** One field of a plugin's config form, checked with Krawall's rules when a session opens. */
export interface PluginConfigField {
  key: string;
  label: string;
  type: "string" | "number" | "boolean" | "select" | "json";
  required: boolean;
  default?: unknown;
  description: string;
  /** For `select`: the values allowed. */
  options?: { label: string; value: string }[];
}

/** The connector a session runs on. (Krawall passes its connector object; here it runs in Rust.) */
export interface ConnectorInfo {
  readonly type: ConnectorType;
}

/** What every hook of a connector plugin gets: one per plugin and session. */
export interface PluginContext {
  sessionId: string;
  targetId: string;
  /** Kept across the session's messages (JSON values only: it is copied between calls). */
  state: Record<string, unknown>;
  connector: ConnectorInfo;
  /** The `config` the session gave this plugin, checked against `configSchema`. */
  pluginConfig?: Record<string, unknown>;
}

/** What `beforeSend` hands on: the (possibly changed) message, and metadata for later plugins and `${name}` template variables. */
export interface BeforeSendResult {
  message: string;
  metadata?: Record<string, unknown>;
}

/** What `afterReceive` hands on: the (possibly changed) answer, and metadata for the reply. */
export interface AfterReceiveResult {
  response: ConnectorResponse;
  metadata?: Record<string, unknown>;
}

/** The hooks `onError` may name. */
export type HookName = "initialize" | "onConnect" | "beforeSend" | "afterReceive" | "onChunk" | "onDisconnect";

/**
 * A Krawall connector plugin. A session runs the plugins it names in ascending `priority`
 * (default 100; auth plugins use 10): `initialize` and `onConnect` when it opens,
 * `beforeSend`, the connector, then `afterReceive` for each message, `onDisconnect` when it
 * closes, and `onError` when one of this plugin's hooks failed.
 */
export interface ConnectorPlugin {
  /** Unique across every plugin; sessions name it in `plugins: [{id}]`. */
  id: string;
  name: string;
  description: string;
  /** Semver, e.g. "1.0.0". */
  version: string;
  /** The target connector types this plugin may be used with. */
  compatibleConnectors: ConnectorType[];
  /** Lower runs first. Default 100. */
  priority?: number;
  minConnectorVersion?: string;
  configSchema?: PluginConfigField[];

  /** Once per session, before `onConnect`. */
  initialize?(context: PluginContext): Awaitable<void>;
  /** When the session opens the connection: return the config to connect with (changed or not). */
  onConnect?(config: ConnectorConfig, context: PluginContext): Awaitable<ConnectorConfig>;
  /** Before each message goes upstream. */
  beforeSend?(
    message: string,
    metadata: MessageMetadata | undefined,
    context: PluginContext
  ): Awaitable<BeforeSendResult>;
  /** After each answer, before the client gets it (once, on the whole answer, when streamed). */
  afterReceive?(response: ConnectorResponse, context: PluginContext): Awaitable<AfterReceiveResult>;
  /**
   * switchyard's addition for streamed answers: each chunk before it reaches the client.
   * Return a string to replace the chunk (`""` drops it); anything else lets it through.
   */
  onChunk?(chunk: string, context: PluginContext): Awaitable<string | null | undefined | void>;
  /** When the session closes; runs for every plugin even if another one fails. */
  onDisconnect?(context: PluginContext): Awaitable<void>;
  /** One of this plugin's hooks threw or timed out. */
  onError?(error: Error, hookName: string, context: PluginContext): void;
}

/** What `PluginLoader.listMetadata()` lists. */
export interface PluginMetadata {
  id: string;
  name: string;
  description: string;
  version: string;
  author?: string;
  compatibleConnectors: string[];
  priority?: number;
}

// ---------------------------------------------------------------------------------------------
// Open Astra gateway plugins
// ---------------------------------------------------------------------------------------------

/**
 * An Open Astra gateway plugin: the module's default export. `init(ctx)` runs at boot in
 * dependency order (what it registers is installed when it succeeds), `start()` once HTTP
 * listens, `stop()` at shutdown in reverse order.
 */
export interface GatewayPlugin {
  name: string;
  /** Semver, e.g. "1.0.0". */
  version: string;
  description?: string;
  init(ctx: GatewayContext): Awaitable<void>;
  start?(): Awaitable<void>;
  stop?(): Awaitable<void>;
}

/** What `init(ctx)` gets. */
export interface GatewayContext {
  readonly logger: Logger;
  /** Express-like routes, mounted under `/plugins/<id>` (or at the path with `{ absolute: true }`). */
  readonly app: GatewayApp;
  getEventBus(): EventBus;
  /** A tool for agents and `POST /api/tools/{name}/invoke`; `parameters` is checked before every call. */
  registerTool<P = Record<string, unknown>>(tool: ToolDefinition<P>): void;
  /** An agent for `POST /api/agents/{id}/chat` (`id` in kebab-case). */
  registerAgentConfig(id: string, config: AgentConfig): void;
  /** A model client; cached by provider, model and endpoint. */
  resolveClient(config: ModelConfig): ModelClient;
}

/** Goes to the service's log, tagged with the plugin. */
export interface Logger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  debug(...args: unknown[]): void;
}

// Routes --------------------------------------------------------------------------------------

/** A request as a route handler sees it. */
export interface RouteRequest {
  method: string;
  /** The whole path, e.g. `/plugins/my-plugin/items/7`. */
  path: string;
  /** The path below the plugin's mount point (`/items/7`); the whole path for absolute routes. */
  mountPath: string;
  /** The pattern the handler was registered with, e.g. `/items/:id`. */
  routePath: string;
  /** `:param` and `*rest` segments. */
  params: Record<string, string>;
  query: Record<string, string | undefined>;
  /** Lower-case names. */
  headers: Record<string, string | undefined>;
  /** Parsed JSON when sent as JSON, otherwise the text; `null` when empty. */
  body: unknown;
  requestId: string;
  /** A header, by any case of its name. */
  get(name: string): string | undefined;
  header(name: string): string | undefined;
}

/** Builds the answer; every method but the getters returns `res` for chaining. */
export interface RouteResponse {
  readonly sent: boolean;
  readonly headersSent: boolean;
  /** 100–599. */
  status(code: number): RouteResponse;
  set(name: string, value: string | number | boolean): RouteResponse;
  set(headers: Record<string, string | number | boolean>): RouteResponse;
  header(name: string, value: string | number | boolean): RouteResponse;
  /** Sends `value` as JSON. */
  json(value?: unknown): RouteResponse;
  /** A string or number as text, an object as JSON, `null`/`undefined` as an empty body. */
  send(value?: unknown): RouteResponse;
  end(): RouteResponse;
  sendStatus(code: number): RouteResponse;
}

/** Middleware only: go on to the next handler. */
export type NextFunction = () => void;

/**
 * A route handler or middleware. It answers with `res`, or returns a value (sent as JSON), or
 * (middleware) calls `next()`. It may be async; a throw answers a JSON 500.
 */
export type RouteHandler = (req: RouteRequest, res: RouteResponse, next: NextFunction) => unknown;

export interface RouteOptions {
  /** Mount at `path` itself instead of under `/plugins/<id>`. */
  absolute?: boolean;
  /** Answer without `server.admin_token` (webhooks). Routes are protected by default. */
  public?: boolean;
}

/** Paths start with `/` and may have `:param` segments and a final `*rest`. */
export interface GatewayApp {
  get(path: string, handler: RouteHandler, options?: RouteOptions): void;
  post(path: string, handler: RouteHandler, options?: RouteOptions): void;
  put(path: string, handler: RouteHandler, options?: RouteOptions): void;
  patch(path: string, handler: RouteHandler, options?: RouteOptions): void;
  delete(path: string, handler: RouteHandler, options?: RouteOptions): void;
  /** Middleware before this plugin's own routes (all of them, or those under `prefix`). */
  use(handler: RouteHandler): void;
  use(prefix: string, handler: RouteHandler): void;
}

// Events --------------------------------------------------------------------------------------

/** An event as the broker carries it. */
export interface BusEvent<T = unknown> {
  event: string;
  /** RFC 3339. */
  timestamp: string;
  data: T;
}

/** Runs on this plugin's own thread, one event at a time, in order. */
export type EventHandler<T = unknown> = (data: T, event: BusEvent<T>) => Awaitable<void>;

export interface EventBus {
  /** `pattern`: an exact name, a prefix such as `plugin.*`, or `*`. */
  on<T = unknown>(pattern: string, handler: EventHandler<T>): void;
  /** Without `handler`, the first handler registered for `pattern`. */
  off(pattern: string, handler?: EventHandler<any>): void;
  /** Publishes `{event: name, timestamp, data}`; `data` must be JSON. */
  emit(name: string, data?: unknown): void;
}

// Tools ---------------------------------------------------------------------------------------

/** A JSON Schema (checked with the `jsonschema` crate). */
export type JsonSchema = boolean | JsonSchemaObject;

export interface JsonSchemaObject {
  type?: JsonSchemaType | JsonSchemaType[];
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema;
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  [keyword: string]: unknown;
}

export type JsonSchemaType = "object" | "array" | "string" | "number" | "integer" | "boolean" | "null";

/** What `execute` gets beside the parameters. */
export interface ToolCallContext {
  logger: Logger;
}

export interface ToolDefinition<P = Record<string, unknown>> {
  /** 1–64 of `[A-Za-z0-9_-]`, unique across plugins. */
  name: string;
  description?: string;
  /** The parameters' JSON Schema; `params` is checked against it before `execute` runs. */
  parameters?: JsonSchema;
  /** Returns the result (JSON), or throws. */
  execute(params: P, context: ToolCallContext): unknown;
}

// Agents and models ---------------------------------------------------------------------------

export type ProviderName =
  | "openai"
  | "anthropic"
  | "claude"
  | "groq"
  | "mistral"
  | "openrouter"
  | "grok"
  | "gemini"
  | "ollama"
  | "vllm";

/** Which model to call (an agent's `model`, or `resolveClient(config)`). */
export interface ModelConfig {
  provider: ProviderName;
  modelId: string;
  /** Another endpoint than the provider's. */
  endpoint?: string;
  /** 0–2; agents default to 0.7. */
  temperature?: number;
  /** Agents default to 4096. */
  maxOutputTokens?: number;
  maxContextTokens?: number;
  /** Answers while this client's circuit breaker is open, or when it failed after its retries. */
  fallback?: ModelConfig;
}

/** An Open Astra agent. */
export interface AgentConfig {
  /** Must equal the id it is registered under, if given. */
  id?: string;
  displayName?: string;
  tier?: "free" | "standard" | "premium";
  model: ModelConfig;
  /** `{{date}}`, `{{agentId}}` and `{{displayName}}` are filled in. */
  systemPromptTemplate?: string;
  /** Tool names; an entry ending in `*` matches a prefix. */
  tools?: { allow?: string[]; deny?: string[] };
  skills?: string[];
  /** Kept, not acted on. */
  spawn?: unknown;
  fileAccess?: unknown;
}

export type ChatRole = "system" | "user" | "assistant" | "tool";

export interface ToolCall {
  id: string;
  name: string;
  arguments: unknown;
}

export interface ChatMessage {
  role: ChatRole;
  content: string;
  /** An assistant message that called tools. */
  toolCalls?: ToolCall[];
  /** A `tool` message: the call it answers. */
  toolCallId?: string;
}

/** A tool the model may call. */
export interface ChatTool {
  name: string;
  description: string;
  parameters: JsonSchema;
}

export interface ChatOptions {
  tools?: ChatTool[];
  temperature?: number;
  maxTokens?: number;
}

export interface ChatUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface ChatResult {
  content: string;
  toolCalls: ToolCall[];
  usage: ChatUsage;
  model: string;
  /** The provider that answered (the fallback's, when it did). */
  provider: string;
}

/** A failed call rejects with an `Error` carrying a `code`. */
export interface ModelCallError extends Error {
  code?: "inference_failed" | "circuit_open" | "invalid_client_config" | "invalid_chat_request" | "unavailable" | (string & {});
}

/** One chunk of a streamed chat: text as the model sends it, then the whole answer. */
export type ChatChunk =
  | { type: "delta"; text: string }
  | { type: "done"; result: ChatResult };

export interface ModelClient {
  readonly config: ModelConfig;
  /**
   * Streamed: an async iterator of chunks (`for await (const chunk of client.chat(messages,
   * { stream: true }))`), deltas then one `done`. A failure rejects the iteration with a
   * `ModelCallError`; retries happen only before the first delta.
   */
  chat(messages: ChatMessage[], options: ChatOptions & { stream: true }): AsyncIterableIterator<ChatChunk>;
  /** The same, as one request object. */
  chat(request: ChatOptions & { messages: ChatMessage[]; stream: true }): AsyncIterableIterator<ChatChunk>;
  /** Retried twice on 429/5xx and network errors; rejects with a `ModelCallError`. */
  chat(messages: ChatMessage[], options?: ChatOptions & { stream?: false }): Promise<ChatResult>;
  /** The same, as one request object. */
  chat(request: ChatOptions & { messages: ChatMessage[]; stream?: false }): Promise<ChatResult>;
}
