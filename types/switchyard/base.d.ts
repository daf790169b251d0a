// `../base` (also `@/lib/connectors/base`): Krawall's lib/connectors/base.ts as a switchyard
// script plugin sees it. The interfaces mirror Krawall's; the notes say where switchyard hands
// a plugin something different at run time. The runtime values are `ConnectorError` and an
// empty abstract `BaseConnector` (the connectors themselves run in Rust).

/** How a target authenticates (Krawall's `AuthType`). */
export type AuthType = "NONE" | "BEARER_TOKEN" | "API_KEY" | "BASIC_AUTH" | "CUSTOM_HEADER" | "OAUTH2";

/** The protocols a target speaks; `compatibleConnectors` lists some of these. */
export type ConnectorType = "HTTP_REST" | "SSE" | "WEBSOCKET" | "GRPC";

/** A target's connection settings, as `onConnect` receives and returns them. */
export interface ConnectorConfig {
  endpoint: string;
  authType: AuthType;
  /** `token`, `apiKey` + `headerName`, `username` + `password`, or `headers`, by `authType`. */
  authConfig: Record<string, unknown>;
  requestTemplate: RequestTemplate;
  responseTemplate: ResponseTemplate;
  /** Per protocol: `headers`, `path`, `method`, `stream`, `eventPath`, `idPath`, … (see the README's Connectors). */
  protocolConfig?: Record<string, unknown>;
  /** Milliseconds. */
  timeout?: number;
  retries?: number;
}

/** Where the message goes in the request body, and the body around it. */
export interface RequestTemplate {
  /** A path such as `messages[0].content`, where the message is written. */
  messagePath: string;
  /** The body to start from; `${name}` strings are replaced by variables (plugin metadata). */
  structure?: Record<string, unknown>;
  /** Values for `${name}` in `structure`. */
  variables?: Record<string, unknown>;
}

/** Where the answer, the usage and errors are in the response body. */
export interface ResponseTemplate {
  /** A path such as `$.choices[0].message.content`. */
  responsePath: string;
  tokenUsagePath?: string;
  errorPath?: string;
  transform?: "none" | "markdown" | "html";
}

/** An upstream answer, as `afterReceive` receives and returns it. */
export interface ConnectorResponse {
  content: string;
  metadata: ResponseMetadata;
}

export interface ResponseMetadata {
  responseTimeMs: number;
  tokenUsage?: TokenUsage;
  rawResponse?: unknown;
  headers?: Record<string, string>;
  /** Streamed answers also carry `firstChunkMs` and `chunks`. */
  [key: string]: unknown;
}

/**
 * What `beforeSend` receives beside the message: the session's own keys, what the client sent
 * as `metadata`, and the metadata returned by the plugins that ran before this one.
 */
export interface MessageMetadata {
  sessionId: string;
  /** 0 for the session's first message. */
  messageIndex: number;
  /**
   * When the message arrived, as an RFC 3339 string. (Krawall passes a `Date`; hooks here get
   * JSON, so `new Date(metadata.timestamp)` works with both.)
   */
  timestamp: string | Date;
  [key: string]: unknown;
}

export interface TokenUsage {
  promptTokens?: number;
  completionTokens?: number;
  totalTokens?: number;
}

export interface HealthStatus {
  healthy: boolean;
  latencyMs?: number;
  error?: string;
  timestamp: Date;
}

/** A progress event of a connect or test (Krawall's `ProgressEvent`). */
export interface ProgressEvent {
  type: string;
  message: string;
  timestamp: Date;
  data?: Record<string, unknown>;
}

/** Krawall's connector error: a message, what caused it, and the upstream's HTTP status. */
export declare class ConnectorError extends Error {
  originalError?: unknown;
  statusCode?: number;
  constructor(message: string, originalError?: unknown, statusCode?: number);
}

/**
 * Krawall's connector base class. In switchyard the connectors are native (HTTP_REST, SSE,
 * WEBSOCKET, GRPC) and this class is an empty shell kept so that Krawall files that name it
 * load: it has no template or auth helpers, and nothing instantiates a subclass.
 */
export declare abstract class BaseConnector {
  abstract connect(): Promise<void>;
  abstract disconnect(): Promise<void>;
  abstract isConnected(): boolean;
  abstract sendMessage(message: string, metadata?: MessageMetadata): Promise<ConnectorResponse>;
  abstract supportsStreaming(): boolean;
  streamMessage?(message: string, onChunk: (chunk: string) => void, metadata?: MessageMetadata): Promise<void>;
  abstract healthCheck(): Promise<HealthStatus>;
}
