// The globals of a script plugin's sandbox (QuickJS-ng, ES2024 without `Intl` and
// `Atomics.waitAsync`), for use without the DOM lib. Web APIs
// only, and only these (src/script/host/web.js and prelude.js): there is no `process`,
// `require`, `Buffer`, `document`, `window`, `Blob`, `File`, `FormData` or `ReadableStream`;
// `Request.body` and `Response.body` are `null` (bodies are read whole: `text()`, `json()`,
// `arrayBuffer()`, `bytes()`); `crypto.subtle` has `digest` only; `TextDecoder` is UTF-8 only.

// Console ----------------------------------------------------------------------------------------

/** Goes to the service's log, tagged with the plugin. */
interface Console {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
}
declare var console: Console;

// Timers and microtasks -------------------------------------------------------------------------

/** Timer ids are numbers, shared by timeouts and intervals. */
declare function setTimeout<A extends unknown[]>(handler: (...args: A) => void, timeout?: number, ...args: A): number;
declare function clearTimeout(id?: number): void;
declare function setInterval<A extends unknown[]>(handler: (...args: A) => void, timeout?: number, ...args: A): number;
declare function clearInterval(id?: number): void;
declare function queueMicrotask(callback: () => void): void;

interface Performance {
  /** Milliseconds since `timeOrigin`, with fractions. */
  now(): number;
  /** When the engine started, in milliseconds since the Unix epoch. */
  readonly timeOrigin: number;
}
declare var performance: Performance;

// Events and cancellation -----------------------------------------------------------------------

interface EventInit {
  bubbles?: boolean;
  cancelable?: boolean;
  composed?: boolean;
}

/** An event; there is no tree, so events do not bubble through one. */
declare class Event {
  constructor(type: string, eventInitDict?: EventInit);
  static readonly NONE: 0;
  static readonly CAPTURING_PHASE: 1;
  static readonly AT_TARGET: 2;
  static readonly BUBBLING_PHASE: 3;
  readonly NONE: 0;
  readonly CAPTURING_PHASE: 1;
  readonly AT_TARGET: 2;
  readonly BUBBLING_PHASE: 3;
  readonly type: string;
  readonly bubbles: boolean;
  readonly cancelable: boolean;
  readonly composed: boolean;
  readonly defaultPrevented: boolean;
  readonly isTrusted: boolean;
  readonly target: EventTarget | null;
  readonly srcElement: EventTarget | null;
  readonly currentTarget: EventTarget | null;
  readonly eventPhase: number;
  readonly timeStamp: number;
  returnValue: boolean;
  cancelBubble: boolean;
  composedPath(): EventTarget[];
  preventDefault(): void;
  stopPropagation(): void;
  stopImmediatePropagation(): void;
}

interface CustomEventInit<T = unknown> extends EventInit {
  detail?: T;
}

declare class CustomEvent<T = unknown> extends Event {
  constructor(type: string, eventInitDict?: CustomEventInit<T>);
  /** `null` when not given. */
  readonly detail: T;
}

interface EventListener {
  (event: Event): void;
}
interface EventListenerObject {
  handleEvent(event: Event): void;
}
type EventListenerOrEventListenerObject = EventListener | EventListenerObject;

interface EventListenerOptions {
  capture?: boolean;
}
interface AddEventListenerOptions extends EventListenerOptions {
  once?: boolean;
  passive?: boolean;
  signal?: AbortSignal;
}

declare class EventTarget {
  constructor();
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions
  ): void;
  dispatchEvent(event: Event): boolean;
}

declare class DOMException extends Error {
  /** `options`: the name (e.g. "AbortError", the default "Error"), or `{ name, cause }`. */
  constructor(message?: string, options?: string | { name?: string; cause?: unknown });
  readonly name: string;
  /** The legacy code of the name (20 for AbortError, 23 for TimeoutError), or 0. */
  readonly code: number;
  static readonly INDEX_SIZE_ERR: 1;
  static readonly NOT_FOUND_ERR: 8;
  static readonly NOT_SUPPORTED_ERR: 9;
  static readonly INVALID_STATE_ERR: 11;
  static readonly SYNTAX_ERR: 12;
  static readonly TYPE_MISMATCH_ERR: 17;
  static readonly NETWORK_ERR: 19;
  static readonly ABORT_ERR: 20;
  static readonly QUOTA_EXCEEDED_ERR: 22;
  static readonly TIMEOUT_ERR: 23;
  static readonly DATA_CLONE_ERR: 25;
}

declare class AbortSignal extends EventTarget {
  /** Use `AbortController`, `AbortSignal.abort()`, `AbortSignal.timeout()` or `AbortSignal.any()`. */
  private constructor();
  readonly aborted: boolean;
  /** Why it was aborted: an `AbortError` or `TimeoutError` `DOMException` unless a reason was given. */
  readonly reason: any;
  onabort: ((this: AbortSignal, event: Event) => any) | null;
  throwIfAborted(): void;
  /** An already aborted signal. */
  static abort(reason?: any): AbortSignal;
  /** Aborts after `milliseconds` with a `TimeoutError`. */
  static timeout(milliseconds: number): AbortSignal;
  /** Aborts when any of `signals` does, with its reason. */
  static any(signals: Iterable<AbortSignal>): AbortSignal;
}

declare class AbortController {
  constructor();
  readonly signal: AbortSignal;
  abort(reason?: any): void;
}

// HTTP ------------------------------------------------------------------------------------------

type HeadersInit = Iterable<[string, string]> | Record<string, string> | Headers;

declare class Headers {
  constructor(init?: HeadersInit);
  append(name: string, value: string): void;
  delete(name: string): void;
  /** The values of `name` joined by ", ", or `null`. */
  get(name: string): string | null;
  /** Every `set-cookie` value, uncombined. */
  getSetCookie(): string[];
  has(name: string): boolean;
  set(name: string, value: string): void;
  forEach(callback: (value: string, name: string, headers: Headers) => void, thisArg?: unknown): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}

/** Request and response bodies: text, bytes, or form-encoded parameters. */
type BodyInit = string | ArrayBuffer | ArrayBufferView | URLSearchParams;

type RequestRedirect = "follow" | "error" | "manual";

type RequestInfo = Request | string;

/** There are no CORS modes, credentials, cache or referrer options. */
interface RequestInit {
  method?: string;
  headers?: HeadersInit;
  body?: BodyInit | null;
  signal?: AbortSignal | null;
  /** "manual" answers with the redirect response itself. */
  redirect?: RequestRedirect;
}

/** What reading a body offers (there are no streams). */
interface Body {
  /** Always `null`: bodies are read whole. */
  readonly body: null;
  readonly bodyUsed: boolean;
  text(): Promise<string>;
  json(): Promise<any>;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
}

declare class Request implements Body {
  /** `input` must be an absolute URL: there is no document to resolve against. */
  constructor(input: RequestInfo | URL, init?: RequestInit);
  readonly method: string;
  readonly url: string;
  readonly headers: Headers;
  readonly signal: AbortSignal;
  readonly redirect: RequestRedirect;
  readonly body: null;
  readonly bodyUsed: boolean;
  text(): Promise<string>;
  json(): Promise<any>;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  clone(): Request;
}

interface ResponseInit {
  status?: number;
  statusText?: string;
  headers?: HeadersInit;
}

declare class Response implements Body {
  constructor(body?: BodyInit | null, init?: ResponseInit);
  static json(data: unknown, init?: ResponseInit): Response;
  static error(): Response;
  static redirect(url: string | URL, status?: number): Response;
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  readonly url: string;
  readonly redirected: boolean;
  readonly type: "basic" | "cors" | "default" | "error" | "opaque" | "opaqueredirect";
  readonly body: null;
  readonly bodyUsed: boolean;
  text(): Promise<string>;
  json(): Promise<any>;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  clone(): Response;
}

/** An HTTP request from the plugin, made by the service; `input` must be an absolute URL. */
declare function fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;

// Text and URLs ---------------------------------------------------------------------------------

declare class TextEncoder {
  constructor();
  readonly encoding: "utf-8";
  encode(input?: string): Uint8Array;
  encodeInto(source: string, destination: Uint8Array): { read: number; written: number };
}

interface TextDecoderOptions {
  fatal?: boolean;
  ignoreBOM?: boolean;
}

declare class TextDecoder {
  constructor(label?: string, options?: TextDecoderOptions);
  readonly encoding: string;
  readonly fatal: boolean;
  readonly ignoreBOM: boolean;
  decode(input?: ArrayBuffer | ArrayBufferView, options?: { stream?: boolean }): string;
}

declare class URL {
  constructor(url: string | URL, base?: string | URL);
  static canParse(url: string | URL, base?: string | URL): boolean;
  /** Like the constructor, but `null` instead of a throw. */
  static parse(url: string | URL, base?: string | URL): URL | null;
  hash: string;
  host: string;
  hostname: string;
  href: string;
  readonly origin: string;
  password: string;
  pathname: string;
  port: string;
  protocol: string;
  search: string;
  readonly searchParams: URLSearchParams;
  username: string;
  toString(): string;
  toJSON(): string;
}

declare class URLSearchParams {
  constructor(init?: string | Record<string, string> | Iterable<[string, string]> | URLSearchParams);
  readonly size: number;
  append(name: string, value: string): void;
  delete(name: string, value?: string): void;
  get(name: string): string | null;
  getAll(name: string): string[];
  has(name: string, value?: string): boolean;
  set(name: string, value: string): void;
  sort(): void;
  toString(): string;
  forEach(callback: (value: string, name: string, params: URLSearchParams) => void, thisArg?: unknown): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}

/** Base64 to a binary string; throws a `DOMException` on bad input. */
declare function atob(data: string): string;
/** A binary string (code points below 256) to base64. */
declare function btoa(data: string): string;

/**
 * A deep copy (also Date, Map, Set, RegExp, ArrayBuffer, typed arrays, errors); functions,
 * promises and platform objects throw a `DataCloneError`. `transfer` detaches nothing.
 */
declare function structuredClone<T>(value: T, options?: { transfer?: unknown[] }): T;

// Crypto ----------------------------------------------------------------------------------------

type IntegerTypedArray =
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

type DigestAlgorithm = "SHA-1" | "SHA-256" | "SHA-384" | "SHA-512";

/** `digest` only: no keys, HMAC, signatures or encryption. */
declare class SubtleCrypto {
  private constructor();
  digest(algorithm: DigestAlgorithm | { name: DigestAlgorithm }, data: ArrayBuffer | ArrayBufferView): Promise<ArrayBuffer>;
}

declare class Crypto {
  private constructor();
  readonly subtle: SubtleCrypto;
  randomUUID(): `${string}-${string}-${string}-${string}-${string}`;
  /** Fills `array` with random values (at most 65536 bytes) and returns it. */
  getRandomValues<T extends IntegerTypedArray>(array: T): T;
}
declare var crypto: Crypto;
