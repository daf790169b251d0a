// Web platform globals for plugin code. QuickJS-ng has ES2023 plus queueMicrotask, performance,
// atob and btoa; plugins copied from Node or a browser also expect fetch, URL, timers, text
// coding, AbortController and the like. They are written here in JS on top of a few native
// functions, so that their observable behaviour follows the WHATWG specs and Node: only what
// needs the outside world (time, network, URL parsing, randomness, hashing) crosses to Rust.
//
// Evaluated as a script; Rust calls the resulting function once per engine with `host`:
//   start(kind, payload) -> { id, promise }   "timer" { ms } and "fetch" { url, method, ... }
//   cancel(id)                                 the op's promise then never settles
//   url(input, base?) / urlSet(href, component, value)   WHATWG URL records (the `url` crate)
//   randomBytes(n) / digest(algorithm, base64) / uuid()
//   outOfMemory()                              a callback ran out of memory (the plugin crashed)
// Nothing of `host` is reachable from plugin code afterwards.
//
// Deliberately missing (the specs are large and plugins rarely need them):
// - streams: no ReadableStream, so Request/Response `body` is always null and bodies are
//   buffered whole; no Blob, File, FormData (and no blob()/formData() on bodies).
// - fetch: no CORS, modes, credentials, cache, referrer, integrity, keepalive (neither the
//   options nor their Request getters); no header guards (forbidden headers, immutable headers);
//   redirect "manual" returns the redirect response itself (as Node does), not an opaque one.
// - TextDecoder: UTF-8 only; TextDecoderStream/TextEncoderStream.
// - crypto.subtle: digest only (no keys, HMAC, signatures, encryption).
// - structuredClone: `transfer` is accepted but nothing is detached; Blob/File/ImageData etc.
// - URL.createObjectURL; setImmediate; the 4 ms clamp for nested timers; CustomEvent aside, no
//   other Event subclasses; events have no propagation path (there is no tree to bubble in).
// - Timer ids are numbers, as in browsers: Node's Timeout objects (ref/unref/refresh) are not.
// - Accessors are class getters, so unlike WebIDL attributes they are not enumerable.
(function installWeb(host) {
  "use strict";
  // Taken now, so a plugin that replaces these globals cannot break the classes below.
  const { atob, btoa, escape, unescape, encodeURIComponent, decodeURIComponent, performance } = globalThis;
  const now = () => performance.now();

  // ------------------------------------------------------------------------------ helpers

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true });
  const tag = (C, name = C.name) =>
    Object.defineProperty(C.prototype, Symbol.toStringTag, { value: name, configurable: true });
  const defineData = (target, key, value) =>
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  // Errors thrown by callbacks the platform calls (timers, listeners) must not stop the caller,
  // except running out of memory: the engine's limit is broken, so the host is told (the plugin
  // then counts as crashed and is restarted, as for the same error in a hook).
  const { InternalError } = globalThis;
  const promiseThen = Promise.prototype.then;
  const report = (err) => {
    if (typeof InternalError === "function" && err instanceof InternalError && String(err.message).includes("out of memory")) {
      host.outOfMemory();
    }
    try {
      globalThis.console.error(err);
    } catch {
      // nowhere left to report to
    }
  };
  const isObject = (v) => (v !== null && typeof v === "object") || typeof v === "function";
  // WebIDL dictionaries: undefined/null mean "all defaults", other primitives are a TypeError.
  const dict = (v, what) => {
    if (v == null) return {};
    if (!isObject(v)) throw new TypeError(`${what} must be an object`);
    return v;
  };
  const requireArgs = (args, n, what) => {
    if (args.length < n) throw new TypeError(`${what}: ${n} argument${n > 1 ? "s" : ""} required, but only ${args.length} present.`);
  };
  // Marks constructors that plugin code must not call (AbortSignal, Crypto) and internal paths.
  const INTERNAL = Symbol("internal");

  // USVString conversion: lone surrogates become U+FFFD, as WebIDL does for URL and form data.
  const toWellFormed = String.prototype.toWellFormed;
  const toUSV = toWellFormed
    ? (v) => toWellFormed.call(String(v))
    : (v) => String(v).replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");

  // Brand checks by calling a built-in getter: works across realms and cannot be spoofed the way
  // `instanceof` or Symbol.toStringTag can.
  const getter = (proto, key) => Object.getOwnPropertyDescriptor(proto, key).get;
  const NOT = Symbol("not");
  const tryCall = (fn, v) => {
    try {
      return fn.call(v);
    } catch {
      return NOT;
    }
  };
  const arrayBufferLength = getter(ArrayBuffer.prototype, "byteLength");
  const sharedBufferLength =
    typeof SharedArrayBuffer === "function" ? getter(SharedArrayBuffer.prototype, "byteLength") : () => {
      throw new TypeError();
    };
  const isArrayBuffer = (v) => isObject(v) && tryCall(arrayBufferLength, v) !== NOT;
  const isSharedArrayBuffer = (v) => isObject(v) && tryCall(sharedBufferLength, v) !== NOT;
  const typedArrayName = getter(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag);

  const EMPTY = new Uint8Array(0);
  // BufferSource -> a Uint8Array over the same memory (no copy), or null.
  const viewBytes = (v) => {
    if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    if (isArrayBuffer(v) || isSharedArrayBuffer(v)) return new Uint8Array(v);
    return null;
  };

  // Code units -> string in chunks: apply() with a huge array overflows the argument limit, and
  // one char at a time is slow.
  const CHUNK = 0x2000;
  const codesToString = (codes, length = codes.length) => {
    const parts = [];
    for (let i = 0; i < length; i += CHUNK) {
      parts.push(String.fromCharCode.apply(null, codes.subarray(i, Math.min(i + CHUNK, length))));
    }
    return parts.join("");
  };
  // Bytes <-> base64. QuickJS-ng has the native Uint8Array.fromBase64/toBase64 (ES2026); the
  // loops are for engines without them. Byte loops run ~100x slower in the interpreter than in
  // C, so the hot paths below lean on native functions wherever the result is identical.
  const nativeToBase64 = Uint8Array.prototype.toBase64;
  const nativeFromBase64 = Uint8Array.fromBase64;
  const toBase64 = nativeToBase64 ? (bytes) => nativeToBase64.call(bytes) : (bytes) => btoa(codesToString(bytes));
  const fromBase64 = nativeFromBase64
    ? (b64) => nativeFromBase64.call(Uint8Array, b64)
    : (b64) => {
        const s = atob(b64);
        const out = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
        return out;
      };
  // "Binary strings" (one char per byte) are what escape/unescape and atob/btoa speak.
  const bytesToBinary = (bytes) => atob(toBase64(bytes));
  const binaryToBytes = (binary) => fromBase64(btoa(binary));
  const fastText = Boolean(nativeFromBase64 && typeof escape === "function" && typeof unescape === "function");
  const concatBytes = (parts) => {
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };

  // Iterators with a live cursor and the spec's "X Iterator" tag, shared by Headers and
  // URLSearchParams. `step()` returns the next IteratorResult.
  const IteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf([][Symbol.iterator]()));
  const iteratorFactory = (name) => {
    const steps = new WeakMap();
    const proto = Object.create(IteratorPrototype, {
      next: {
        value: function next() {
          const step = steps.get(this);
          if (!step) throw new TypeError(`next method called on incompatible receiver`);
          return step();
        },
        writable: true,
        configurable: true,
      },
      [Symbol.toStringTag]: { value: name, configurable: true },
    });
    return (step) => {
      const it = Object.create(proto);
      steps.set(it, step);
      return it;
    };
  };
  const pairIterator = (make, pairs, kind) => {
    let i = 0;
    return make(() => {
      const list = pairs();
      if (i >= list.length) return { value: undefined, done: true };
      const [name, value] = list[i++];
      return { value: kind === "keys" ? name : kind === "values" ? value : [name, value], done: false };
    });
  };

  // -------------------------------------------------------------------- DOMException

  const LEGACY_CODES = [
    ["IndexSizeError", "INDEX_SIZE_ERR", 1],
    [null, "DOMSTRING_SIZE_ERR", 2],
    ["HierarchyRequestError", "HIERARCHY_REQUEST_ERR", 3],
    ["WrongDocumentError", "WRONG_DOCUMENT_ERR", 4],
    ["InvalidCharacterError", "INVALID_CHARACTER_ERR", 5],
    [null, "NO_DATA_ALLOWED_ERR", 6],
    ["NoModificationAllowedError", "NO_MODIFICATION_ALLOWED_ERR", 7],
    ["NotFoundError", "NOT_FOUND_ERR", 8],
    ["NotSupportedError", "NOT_SUPPORTED_ERR", 9],
    ["InUseAttributeError", "INUSE_ATTRIBUTE_ERR", 10],
    ["InvalidStateError", "INVALID_STATE_ERR", 11],
    ["SyntaxError", "SYNTAX_ERR", 12],
    ["InvalidModificationError", "INVALID_MODIFICATION_ERR", 13],
    ["NamespaceError", "NAMESPACE_ERR", 14],
    ["InvalidAccessError", "INVALID_ACCESS_ERR", 15],
    [null, "VALIDATION_ERR", 16],
    ["TypeMismatchError", "TYPE_MISMATCH_ERR", 17],
    ["SecurityError", "SECURITY_ERR", 18],
    ["NetworkError", "NETWORK_ERR", 19],
    ["AbortError", "ABORT_ERR", 20],
    ["URLMismatchError", "URL_MISMATCH_ERR", 21],
    ["QuotaExceededError", "QUOTA_EXCEEDED_ERR", 22],
    ["TimeoutError", "TIMEOUT_ERR", 23],
    ["InvalidNodeTypeError", "INVALID_NODE_TYPE_ERR", 24],
    ["DataCloneError", "DATA_CLONE_ERR", 25],
  ];
  const codeOfName = new Map(LEGACY_CODES.filter(([name]) => name).map(([name, , code]) => [name, code]));

  let isDOMException;
  class DOMException extends Error {
    #name;
    // Second argument: a name (the classic signature) or { name, cause } (newer spec, Node).
    constructor(message = "", options = "Error") {
      const opts = isObject(options) ? options : null;
      super(String(message), opts && "cause" in opts ? { cause: opts.cause } : undefined);
      this.#name = opts ? (opts.name === undefined ? "Error" : String(opts.name)) : String(options);
    }
    get name() {
      return this.#name;
    }
    get code() {
      return codeOfName.get(this.#name) ?? 0;
    }
    static {
      isDOMException = (v) => isObject(v) && #name in v;
    }
  }
  tag(DOMException);
  for (const [, constant, code] of LEGACY_CODES) {
    const desc = { value: code, enumerable: true };
    Object.defineProperty(DOMException, constant, desc);
    Object.defineProperty(DOMException.prototype, constant, desc);
  }
  const abortError = () => new DOMException("This operation was aborted", "AbortError");

  // ---------------------------------------------------------------- TextEncoder/Decoder

  // UTF-8 length of a string, counting lone surrogates as U+FFFD (3 bytes).
  const utf8Length = (s) => {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        n += 4;
        i++;
      } else n += 3;
    }
    return n;
  };
  // Writes as many whole code points as fit; returns encodeInto's { read, written }.
  const writeUtf8 = (s, dest) => {
    const n = s.length;
    const cap = dest.length;
    let i = 0;
    let w = 0;
    while (i < n) {
      let c = s.charCodeAt(i);
      let units = 1;
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = c <= 0xdbff ? s.charCodeAt(i + 1) : 0;
        if ((d & 0xfc00) === 0xdc00) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          units = 2;
        } else c = 0xfffd;
      }
      if (c < 0x80) {
        if (w + 1 > cap) break;
        dest[w++] = c;
      } else if (c < 0x800) {
        if (w + 2 > cap) break;
        dest[w++] = 0xc0 | (c >> 6);
        dest[w++] = 0x80 | (c & 0x3f);
      } else if (c < 0x10000) {
        if (w + 3 > cap) break;
        dest[w++] = 0xe0 | (c >> 12);
        dest[w++] = 0x80 | ((c >> 6) & 0x3f);
        dest[w++] = 0x80 | (c & 0x3f);
      } else {
        if (w + 4 > cap) break;
        dest[w++] = 0xf0 | (c >> 18);
        dest[w++] = 0x80 | ((c >> 12) & 0x3f);
        dest[w++] = 0x80 | ((c >> 6) & 0x3f);
        dest[w++] = 0x80 | (c & 0x3f);
      }
      i += units;
    }
    return { read: i, written: w };
  };
  // Text is coded in slices so the %XX intermediate strings of the native path stay small.
  const SLICE = 0x10000;
  const utf8Encode = (s) => {
    if (!fastText) {
      const out = new Uint8Array(utf8Length(s));
      writeUtf8(s, out);
      return out;
    }
    // encodeURIComponent is a native UTF-8 encoder (it only throws on lone surrogates, which
    // toUSV has replaced); unescape turns its %XX into one char per byte.
    const parts = [];
    for (let i = 0; i < s.length; ) {
      let end = Math.min(i + SLICE, s.length);
      if (end < s.length && (s.charCodeAt(end - 1) & 0xfc00) === 0xd800) end++; // keep pairs whole
      parts.push(binaryToBytes(unescape(encodeURIComponent(toUSV(s.slice(i, end))))));
      i = end;
    }
    return parts.length ? concatBytes(parts) : new Uint8Array(0);
  };

  // The WHATWG UTF-8 decoder, state kept between calls for streaming. Its error handling decides
  // how many U+FFFD an invalid sequence yields, which is observable and differs between naive
  // decoders, so it follows the spec's algorithm step by step.
  const utf8State = () => ({ need: 0, seen: 0, cp: 0, lo: 0x80, hi: 0xbf });
  const decodeFailed = () => new TypeError("The encoded data was not valid for encoding utf-8");
  const utf8Decode = (bytes, state, flush, fatal) => {
    if (fastText && state.need === 0 && bytes.length > 0) {
      const fast = decodeValidPrefix(bytes);
      if (fast) {
        const rest = bytes.subarray(fast.length);
        return rest.length ? fast.text + decodeSlow(rest, state, flush, fatal) : fast.text;
      }
    }
    return decodeSlow(bytes, state, flush, fatal);
  };
  // Start of the sequence cut off by `end`, if one is (so slices end on code point boundaries).
  const boundary = (bytes, end) => {
    for (let i = end - 1; i >= 0 && i >= end - 3; i--) {
      const b = bytes[i];
      if (b < 0x80) return end;
      if (b >= 0xc0) return end - i < (b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2) ? i : end;
    }
    return end;
  };
  // Decodes the longest prefix ending on a code point boundary natively, or returns null if
  // it is not valid UTF-8 (then the spec decoder below handles everything). decodeURIComponent
  // rejects exactly what the WHATWG decoder would replace: overlongs, surrogates, > U+10FFFF.
  const decodeValidPrefix = (bytes) => {
    const length = boundary(bytes, bytes.length);
    const parts = [];
    for (let i = 0; i < length; ) {
      const end = i + SLICE >= length ? length : boundary(bytes, i + SLICE);
      try {
        parts.push(decodeURIComponent(escape(bytesToBinary(bytes.subarray(i, end)))));
      } catch {
        return null;
      }
      i = end;
    }
    return { text: parts.join(""), length };
  };
  const decodeSlow = (bytes, state, flush, fatal) => {
    const n = bytes.length;
    // Every byte yields at most one code unit, except that bytes left over from the previous
    // call can add a U+FFFD or a surrogate pair, and flushing one more U+FFFD.
    const out = new Uint16Array(n + 4);
    let o = 0;
    let { need, seen, cp, lo, hi } = state;
    for (let i = 0; i < n; ) {
      const b = bytes[i];
      if (need === 0) {
        i++;
        if (b < 0x80) out[o++] = b;
        else if (b >= 0xc2 && b <= 0xdf) {
          need = 1;
          cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) lo = 0xa0;
          else if (b === 0xed) hi = 0x9f;
          need = 2;
          cp = b & 0xf;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) lo = 0x90;
          else if (b === 0xf4) hi = 0x8f;
          need = 3;
          cp = b & 0x7;
        } else {
          if (fatal) throw decodeFailed();
          out[o++] = 0xfffd;
        }
        continue;
      }
      if (b < lo || b > hi) {
        // The sequence ends early: one U+FFFD, and this byte starts afresh (not consumed).
        need = seen = cp = 0;
        lo = 0x80;
        hi = 0xbf;
        if (fatal) throw decodeFailed();
        out[o++] = 0xfffd;
        continue;
      }
      i++;
      lo = 0x80;
      hi = 0xbf;
      cp = (cp << 6) | (b & 0x3f);
      if (++seen !== need) continue;
      if (cp > 0xffff) {
        out[o++] = 0xd800 + ((cp - 0x10000) >> 10);
        out[o++] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
      } else out[o++] = cp;
      need = seen = cp = 0;
    }
    if (flush && need !== 0) {
      need = seen = cp = 0;
      lo = 0x80;
      hi = 0xbf;
      if (fatal) throw decodeFailed();
      out[o++] = 0xfffd;
    }
    Object.assign(state, { need, seen, cp, lo, hi });
    return codesToString(out, o);
  };
  // One-shot decodes: bodies strip a leading BOM ("UTF-8 decode"), form data keeps it.
  const decodeUtf8 = (bytes, stripBOM) => {
    const s = utf8Decode(bytes, utf8State(), true, false);
    return stripBOM && s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
  };

  class TextEncoder {
    get encoding() {
      return "utf-8";
    }
    encode(input = "") {
      return utf8Encode(String(input));
    }
    encodeInto(source, destination) {
      requireArgs(arguments, 2, "TextEncoder.encodeInto");
      if (typedArrayName.call(destination) !== "Uint8Array") {
        throw new TypeError("The \"dest\" argument must be an instance of Uint8Array.");
      }
      return writeUtf8(String(source), destination);
    }
  }
  tag(TextEncoder);

  const UTF8_LABELS = ["unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"];
  class TextDecoder {
    #fatal;
    #ignoreBOM;
    #state = utf8State();
    #bomSeen = false;
    #streaming = false;
    constructor(label = "utf-8", options = undefined) {
      const name = String(label).replace(/^[\t\n\f\r ]+|[\t\n\f\r ]+$/g, "").toLowerCase();
      if (!UTF8_LABELS.includes(name)) throw new RangeError(`The "${label}" encoding is not supported`);
      const opts = dict(options, "TextDecoder options");
      this.#fatal = Boolean(opts.fatal);
      this.#ignoreBOM = Boolean(opts.ignoreBOM);
    }
    get encoding() {
      return "utf-8";
    }
    get fatal() {
      return this.#fatal;
    }
    get ignoreBOM() {
      return this.#ignoreBOM;
    }
    decode(input = undefined, options = undefined) {
      const bytes = input === undefined ? EMPTY : viewBytes(input);
      if (!bytes) throw new TypeError("The \"input\" argument must be an instance of ArrayBuffer or ArrayBufferView.");
      const stream = Boolean(dict(options, "TextDecoder.decode options").stream);
      // A call after a non-streaming one starts a new stream.
      if (!this.#streaming) {
        this.#state = utf8State();
        this.#bomSeen = false;
      }
      this.#streaming = stream;
      let text;
      try {
        text = utf8Decode(bytes, this.#state, !stream, this.#fatal);
      } catch (err) {
        this.#streaming = false;
        throw err;
      }
      // The BOM is only stripped at the very start of a stream, even if split across calls.
      if (!this.#ignoreBOM && !this.#bomSeen && text.length > 0) {
        this.#bomSeen = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      return text;
    }
  }
  tag(TextDecoder);

  // --------------------------------------------------------------------- URLSearchParams

  const isHexByte = (b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
  // application/x-www-form-urlencoded value: "+" is a space, %XX are bytes of UTF-8.
  const formDecode = (s) => {
    s = s.replace(/\+/g, " ");
    if (!s.includes("%")) return s;
    try {
      // Identical whenever it succeeds: percent-decode, then strict UTF-8 decode.
      return decodeURIComponent(s);
    } catch {
      // stray "%" or invalid UTF-8: the byte-wise way, with U+FFFD replacements
    }
    const bytes = utf8Encode(s);
    const out = new Uint8Array(bytes.length);
    let o = 0;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      if (b === 0x25 && i + 2 < bytes.length && isHexByte(bytes[i + 1]) && isHexByte(bytes[i + 2])) {
        out[o++] = parseInt(String.fromCharCode(bytes[i + 1], bytes[i + 2]), 16);
        i += 2;
      } else out[o++] = b;
    }
    return decodeUtf8(out.subarray(0, o), false);
  };
  const parseForm = (s) => {
    const list = [];
    for (const part of s.split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      list.push(eq < 0 ? [formDecode(part), ""] : [formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1))]);
    }
    return list;
  };
  // encodeURIComponent leaves !'()~ alone too; the form encoding escapes them, and uses "+".
  const formEncode = (s) =>
    encodeURIComponent(s).replace(/[!'()~]|%20/g, (c) => (c === "%20" ? "+" : `%${c.charCodeAt(0).toString(16).toUpperCase()}`));
  const serializeForm = (list) => list.map(([name, value]) => `${formEncode(name)}=${formEncode(value)}`).join("&");

  const paramsIterator = iteratorFactory("URLSearchParams Iterator");
  let paramsState;
  class URLSearchParams {
    #list = [];
    #onChange = null; // set when owned by a URL: writes the query back
    constructor(init = "") {
      if (isObject(init)) {
        const iterate = init[Symbol.iterator];
        if (iterate != null) {
          if (typeof iterate !== "function") throw new TypeError("Query pairs must be iterable");
          for (const pair of init) {
            if (!isObject(pair) || typeof pair[Symbol.iterator] !== "function") {
              throw new TypeError("Each query pair must be an iterable [name, value] tuple");
            }
            const items = [...pair];
            if (items.length !== 2) throw new TypeError("Each query pair must be an iterable [name, value] tuple");
            this.#list.push([toUSV(items[0]), toUSV(items[1])]);
          }
        } else {
          for (const key of Reflect.ownKeys(init)) {
            if (typeof key !== "string" || !Object.getOwnPropertyDescriptor(init, key)?.enumerable) continue;
            this.#list.push([toUSV(key), toUSV(init[key])]);
          }
        }
      } else {
        const s = toUSV(init);
        this.#list = parseForm(s.startsWith("?") ? s.slice(1) : s);
      }
    }
    #update() {
      this.#onChange?.(serializeForm(this.#list));
    }
    get size() {
      return this.#list.length;
    }
    append(name, value) {
      requireArgs(arguments, 2, "URLSearchParams.append");
      this.#list.push([toUSV(name), toUSV(value)]);
      this.#update();
    }
    delete(name, value = undefined) {
      requireArgs(arguments, 1, "URLSearchParams.delete");
      name = toUSV(name);
      if (value === undefined) this.#list = this.#list.filter(([n]) => n !== name);
      else {
        value = toUSV(value);
        this.#list = this.#list.filter(([n, v]) => n !== name || v !== value);
      }
      this.#update();
    }
    get(name) {
      requireArgs(arguments, 1, "URLSearchParams.get");
      name = toUSV(name);
      const pair = this.#list.find(([n]) => n === name);
      return pair ? pair[1] : null;
    }
    getAll(name) {
      requireArgs(arguments, 1, "URLSearchParams.getAll");
      name = toUSV(name);
      return this.#list.filter(([n]) => n === name).map(([, v]) => v);
    }
    has(name, value = undefined) {
      requireArgs(arguments, 1, "URLSearchParams.has");
      name = toUSV(name);
      if (value === undefined) return this.#list.some(([n]) => n === name);
      value = toUSV(value);
      return this.#list.some(([n, v]) => n === name && v === value);
    }
    set(name, value) {
      requireArgs(arguments, 2, "URLSearchParams.set");
      name = toUSV(name);
      value = toUSV(value);
      const at = this.#list.findIndex(([n]) => n === name);
      if (at < 0) this.#list.push([name, value]);
      else {
        this.#list[at] = [name, value];
        this.#list = this.#list.filter(([n], i) => i <= at || n !== name);
      }
      this.#update();
    }
    sort() {
      // Stable, by UTF-16 code units, which is what the default comparison does.
      this.#list = this.#list
        .map((pair, i) => [pair, i])
        .sort(([a, i], [b, j]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : i - j))
        .map(([pair]) => pair);
      this.#update();
    }
    forEach(callback, thisArg = undefined) {
      if (typeof callback !== "function") throw new TypeError("The \"callback\" argument must be of type function");
      for (let i = 0; i < this.#list.length; i++) {
        const [name, value] = this.#list[i];
        callback.call(thisArg, value, name, this);
      }
    }
    keys() {
      return pairIterator(paramsIterator, () => this.#list, "keys");
    }
    values() {
      return pairIterator(paramsIterator, () => this.#list, "values");
    }
    entries() {
      return pairIterator(paramsIterator, () => this.#list, "entries");
    }
    toString() {
      return serializeForm(this.#list);
    }
    static {
      paramsState = {
        link(params, onChange) {
          params.#onChange = onChange;
        },
        // The URL's query changed: re-read the list without writing back.
        reset(params, search) {
          params.#list = parseForm(search.startsWith("?") ? search.slice(1) : search);
        },
      };
    }
  }
  Object.defineProperty(URLSearchParams.prototype, Symbol.iterator, {
    value: URLSearchParams.prototype.entries,
    writable: true,
    configurable: true,
  });
  tag(URLSearchParams);

  // --------------------------------------------------------------------------------- URL

  // The host returns a record of the WHATWG getters' values; every setter goes back to the host
  // so the parser's rules live in one place (the `url` crate).
  const parseURL = (url, base) => (base === undefined ? host.url(toUSV(url)) : host.url(toUSV(url), toUSV(base)));

  class URL {
    #url;
    #params;
    constructor(url, base = undefined) {
      requireArgs(arguments, 1, "URL constructor");
      this.#url = parseURL(url, base);
      this.#params = new URLSearchParams(this.#url.search);
      paramsState.link(this.#params, (query) => {
        this.#url = host.urlSet(this.#url.href, "search", query);
      });
    }
    static canParse(url, base = undefined) {
      requireArgs(arguments, 1, "URL.canParse");
      try {
        parseURL(url, base);
        return true;
      } catch {
        return false;
      }
    }
    static parse(url, base = undefined) {
      requireArgs(arguments, 1, "URL.parse");
      try {
        return new URL(url, base);
      } catch {
        return null;
      }
    }
    #set(component, value) {
      this.#url = host.urlSet(this.#url.href, component, toUSV(value));
    }
    get href() {
      return this.#url.href;
    }
    set href(value) {
      this.#url = host.url(toUSV(value));
      paramsState.reset(this.#params, this.#url.search);
    }
    get origin() {
      return this.#url.origin;
    }
    get protocol() {
      return this.#url.protocol;
    }
    set protocol(value) {
      this.#set("protocol", value);
    }
    get username() {
      return this.#url.username;
    }
    set username(value) {
      this.#set("username", value);
    }
    get password() {
      return this.#url.password;
    }
    set password(value) {
      this.#set("password", value);
    }
    get host() {
      return this.#url.host;
    }
    set host(value) {
      this.#set("host", value);
    }
    get hostname() {
      return this.#url.hostname;
    }
    set hostname(value) {
      this.#set("hostname", value);
    }
    get port() {
      return this.#url.port;
    }
    set port(value) {
      this.#set("port", value);
    }
    get pathname() {
      return this.#url.pathname;
    }
    set pathname(value) {
      this.#set("pathname", value);
    }
    get search() {
      return this.#url.search;
    }
    set search(value) {
      this.#set("search", value);
      paramsState.reset(this.#params, this.#url.search);
    }
    get searchParams() {
      return this.#params;
    }
    get hash() {
      return this.#url.hash;
    }
    set hash(value) {
      this.#set("hash", value);
    }
    toString() {
      return this.#url.href;
    }
    toJSON() {
      return this.#url.href;
    }
  }
  tag(URL);

  // ---------------------------------------------------------------- Event, EventTarget

  const eventInit = (init, what) => dict(init, `${what} init`);
  let eventState;
  class Event {
    #type;
    #bubbles;
    #cancelable;
    #composed;
    #timeStamp = now();
    #target = null;
    #currentTarget = null;
    #phase = 0;
    #canceled = false;
    #stop = false;
    #stopNow = false;
    #dispatching = false;
    #inPassiveListener = false;
    #trusted = false;
    constructor(type, init = undefined) {
      requireArgs(arguments, 1, "Event constructor");
      const opts = eventInit(init, "Event");
      this.#type = String(type);
      this.#bubbles = Boolean(opts.bubbles);
      this.#cancelable = Boolean(opts.cancelable);
      this.#composed = Boolean(opts.composed);
    }
    get type() {
      return this.#type;
    }
    get target() {
      return this.#target;
    }
    get srcElement() {
      return this.#target;
    }
    get currentTarget() {
      return this.#currentTarget;
    }
    get eventPhase() {
      return this.#phase;
    }
    get bubbles() {
      return this.#bubbles;
    }
    get cancelable() {
      return this.#cancelable;
    }
    get composed() {
      return this.#composed;
    }
    get defaultPrevented() {
      return this.#canceled;
    }
    get isTrusted() {
      return this.#trusted;
    }
    get timeStamp() {
      return this.#timeStamp;
    }
    get returnValue() {
      return !this.#canceled;
    }
    set returnValue(value) {
      if (!value) this.preventDefault();
    }
    get cancelBubble() {
      return this.#stop;
    }
    set cancelBubble(value) {
      if (value) this.#stop = true;
    }
    composedPath() {
      return this.#dispatching && this.#currentTarget ? [this.#currentTarget] : [];
    }
    preventDefault() {
      if (this.#cancelable && !this.#inPassiveListener) this.#canceled = true;
    }
    stopPropagation() {
      this.#stop = true;
    }
    stopImmediatePropagation() {
      this.#stop = this.#stopNow = true;
    }
    static {
      eventState = {
        is: (e) => isObject(e) && #type in e,
        type: (e) => e.#type,
        stopped: (e) => e.#stop,
        stoppedNow: (e) => e.#stopNow,
        passive(e, on) {
          e.#inPassiveListener = on;
        },
        begin(e, target, trusted) {
          if (e.#dispatching) throw new DOMException("The event is already being dispatched.", "InvalidStateError");
          e.#dispatching = true;
          e.#trusted = trusted;
          e.#target = e.#currentTarget = target;
          e.#phase = 2; // AT_TARGET: there is no tree, so no capturing or bubbling phase
        },
        end(e) {
          e.#dispatching = false;
          e.#phase = 0;
          e.#currentTarget = null;
          e.#stop = e.#stopNow = false;
          return !e.#canceled;
        },
      };
    }
  }
  for (const [name, value] of [["NONE", 0], ["CAPTURING_PHASE", 1], ["AT_TARGET", 2], ["BUBBLING_PHASE", 3]]) {
    Object.defineProperty(Event, name, { value, enumerable: true });
    Object.defineProperty(Event.prototype, name, { value, enumerable: true });
  }
  tag(Event);

  class CustomEvent extends Event {
    #detail;
    constructor(type, init = undefined) {
      requireArgs(arguments, 1, "CustomEvent constructor");
      super(type, init);
      this.#detail = eventInit(init, "CustomEvent").detail ?? null;
    }
    get detail() {
      return this.#detail;
    }
  }
  tag(CustomEvent);

  let signalState; // AbortSignal internals, set in its static block
  const listenerOptions = (options) => {
    if (!isObject(options)) return { capture: Boolean(options), once: false, passive: false, signal: null };
    const signal = options.signal;
    if (signal !== undefined && !signalState.is(signal)) {
      throw new TypeError("The \"options.signal\" property must be an instance of AbortSignal.");
    }
    return {
      capture: Boolean(options.capture),
      once: Boolean(options.once),
      passive: Boolean(options.passive),
      signal: signal ?? null,
    };
  };

  let dispatchTrusted, listenerCount;
  class EventTarget {
    #listeners = new Map(); // type -> [{ callback, capture, once, passive, removed, unlink }]
    addEventListener(type, callback, options = undefined) {
      requireArgs(arguments, 2, "EventTarget.addEventListener");
      type = String(type);
      const { capture, once, passive, signal } = listenerOptions(options);
      if (callback == null) return;
      if (!isObject(callback)) throw new TypeError("The \"listener\" argument must be a function or an object with handleEvent.");
      if (signal?.aborted) return;
      let list = this.#listeners.get(type);
      if (!list) this.#listeners.set(type, (list = []));
      if (list.some((l) => l.callback === callback && l.capture === capture)) return;
      const listener = { callback, capture, once, passive, removed: false, unlink: null };
      list.push(listener);
      if (signal) listener.unlink = signalState.onAbort(signal, () => this.#remove(type, listener));
      this.#changed(type);
    }
    removeEventListener(type, callback, options = undefined) {
      requireArgs(arguments, 2, "EventTarget.removeEventListener");
      type = String(type);
      const capture = isObject(options) ? Boolean(options.capture) : Boolean(options);
      const listener = this.#listeners.get(type)?.find((l) => l.callback === callback && l.capture === capture);
      if (listener) this.#remove(type, listener);
    }
    #remove(type, listener) {
      listener.removed = true;
      listener.unlink?.();
      const list = this.#listeners.get(type);
      const at = list ? list.indexOf(listener) : -1;
      if (at >= 0) list.splice(at, 1);
      if (list && list.length === 0) this.#listeners.delete(type);
      this.#changed(type);
    }
    // A dependent AbortSignal stays alive only while someone listens (see AbortSignal.any).
    #changed(type) {
      if (type === "abort" && signalState.is(this)) signalState.listenersChanged(this);
    }
    dispatchEvent(event) {
      requireArgs(arguments, 1, "EventTarget.dispatchEvent");
      if (!eventState.is(event)) throw new TypeError("The \"event\" argument must be an instance of Event.");
      return this.#dispatch(event, false);
    }
    #dispatch(event, trusted) {
      eventState.begin(event, this, trusted);
      let notCanceled;
      try {
        const type = eventState.type(event);
        // A snapshot: listeners added during dispatch wait for the next event; removed ones
        // are skipped through their `removed` flag.
        const snapshot = this.#listeners.get(type)?.slice() ?? [];
        // At the target, capturing listeners run before the others.
        for (const capture of [true, false]) {
          for (const l of snapshot) {
            if (eventState.stopped(event)) break;
            if (l.capture !== capture || l.removed) continue;
            if (l.once) this.#remove(type, l);
            eventState.passive(event, l.passive);
            try {
              if (typeof l.callback === "function") l.callback.call(this, event);
              else {
                const handleEvent = l.callback.handleEvent;
                if (typeof handleEvent !== "function") throw new TypeError("The listener's handleEvent is not a function");
                handleEvent.call(l.callback, event);
              }
            } catch (err) {
              report(err);
            }
            eventState.passive(event, false);
            if (eventState.stoppedNow(event)) break;
          }
        }
      } finally {
        notCanceled = eventState.end(event);
      }
      return notCanceled;
    }
    static {
      dispatchTrusted = (target, event) => target.#dispatch(event, true);
      listenerCount = (target, type) => target.#listeners.get(type)?.length ?? 0;
    }
  }
  tag(EventTarget);
  const addListener = EventTarget.prototype.addEventListener;
  const removeListener = EventTarget.prototype.removeEventListener;

  // ------------------------------------------------------------ AbortSignal, Controller

  class AbortSignal extends EventTarget {
    #aborted = false;
    #reason = undefined;
    #algorithms = new Set(); // internal reactions (fetch, listener `signal` options)
    // AbortSignal.any: a dependent holds its sources strongly, sources hold their dependents
    // through WeakRefs (as the spec does), so a long-lived signal given to many fetches does not
    // keep every request's signal. A dependent with abort listeners or algorithms is `pinned`
    // by its sources: it must still fire even if nothing else references it.
    #dependent = false;
    #sources = new Set();
    #dependents = new Set(); // WeakRef, one per dependent (its #weak)
    #pinned = new Set();
    #sweepAt = 16;
    #weak = null;
    #onabort = null;
    #onabortListener = null;
    constructor(key = undefined) {
      if (key !== INTERNAL) throw new TypeError("Illegal constructor");
      super();
    }
    get aborted() {
      return this.#aborted;
    }
    get reason() {
      return this.#reason;
    }
    throwIfAborted() {
      if (this.#aborted) throw this.#reason;
    }
    // An event handler attribute: one listener, registered when first set, calling the current
    // handler, so it runs in the order it was first set relative to addEventListener ones.
    get onabort() {
      return this.#onabort;
    }
    set onabort(value) {
      this.#onabort = isObject(value) ? value : null;
      if (this.#onabort && !this.#onabortListener) {
        this.#onabortListener = (event) => {
          const handler = this.#onabort;
          if (typeof handler === "function") handler.call(this, event);
        };
        addListener.call(this, "abort", this.#onabortListener);
      } else if (!this.#onabort && this.#onabortListener) {
        removeListener.call(this, "abort", this.#onabortListener);
        this.#onabortListener = null;
      }
    }
    static abort(reason = undefined) {
      const signal = new AbortSignal(INTERNAL);
      signal.#aborted = true;
      signal.#reason = reason === undefined ? abortError() : reason;
      return signal;
    }
    static timeout(ms) {
      requireArgs(arguments, 1, "AbortSignal.timeout");
      const delay = Number(ms);
      if (!Number.isFinite(delay) || Math.trunc(delay) < 0 || delay > Number.MAX_SAFE_INTEGER) {
        throw new TypeError(`AbortSignal.timeout: ${ms} is outside the accepted range of milliseconds`);
      }
      const signal = new AbortSignal(INTERNAL);
      host.start("timer", { ms: Math.trunc(delay) }).promise.then(
        () => AbortSignal.#abort(signal, new DOMException("The operation was aborted due to timeout", "TimeoutError")),
        report,
      );
      return signal;
    }
    static any(signals) {
      requireArgs(arguments, 1, "AbortSignal.any");
      const list = [...signals];
      for (const s of list) {
        if (!signalState.is(s)) throw new TypeError("The \"signals\" argument must be a sequence of AbortSignal.");
      }
      const result = new AbortSignal(INTERNAL);
      const aborted = list.find((s) => s.#aborted);
      if (aborted) {
        result.#aborted = true;
        result.#reason = aborted.#reason;
        return result;
      }
      // Depend on the original sources only, so chains of any() don't grow.
      result.#dependent = true;
      result.#weak = new WeakRef(result);
      for (const s of list) {
        for (const source of s.#dependent ? s.#sources : [s]) {
          result.#sources.add(source);
          source.#dependents.add(result.#weak);
          // Drop collected dependents now and then, amortised over additions.
          if (source.#dependents.size >= source.#sweepAt) {
            for (const ref of source.#dependents) if (!ref.deref()) source.#dependents.delete(ref);
            source.#sweepAt = Math.max(16, source.#dependents.size * 2);
          }
        }
      }
      return result;
    }
    static #repin(signal) {
      if (!signal.#dependent || signal.#aborted) return;
      const needed = signal.#algorithms.size > 0 || listenerCount(signal, "abort") > 0;
      for (const source of signal.#sources) {
        if (needed) source.#pinned.add(signal);
        else source.#pinned.delete(signal);
      }
    }
    static #abort(signal, reason) {
      if (signal.#aborted) return;
      signal.#aborted = true;
      signal.#reason = reason === undefined ? abortError() : reason;
      // Dependents get their reason before any abort event fires, as the spec orders it.
      const dependents = [];
      for (const ref of signal.#dependents) {
        const d = ref.deref();
        if (!d || d.#aborted) continue;
        d.#aborted = true;
        d.#reason = signal.#reason;
        dependents.push(d);
      }
      AbortSignal.#runAbortSteps(signal);
      for (const d of dependents) AbortSignal.#runAbortSteps(d);
    }
    static #runAbortSteps(signal) {
      const algorithms = [...signal.#algorithms];
      signal.#algorithms.clear();
      for (const algorithm of algorithms) {
        try {
          algorithm();
        } catch (err) {
          report(err);
        }
      }
      // An aborted signal never aborts again: let go of the links both ways.
      for (const source of signal.#sources) {
        source.#dependents.delete(signal.#weak);
        source.#pinned.delete(signal);
      }
      signal.#sources.clear();
      signal.#dependents.clear();
      signal.#pinned.clear();
      dispatchTrusted(signal, new Event("abort"));
    }
    static {
      signalState = {
        is: (v) => isObject(v) && #aborted in v,
        create: () => new AbortSignal(INTERNAL),
        abort: (signal, reason) => AbortSignal.#abort(signal, reason),
        // Runs `fn` when `signal` aborts; returns a function that forgets it.
        onAbort(signal, fn) {
          const entry = () => fn();
          signal.#algorithms.add(entry);
          AbortSignal.#repin(signal);
          return () => {
            signal.#algorithms.delete(entry);
            AbortSignal.#repin(signal);
          };
        },
        listenersChanged: (signal) => AbortSignal.#repin(signal),
      };
    }
  }
  tag(AbortSignal);

  class AbortController {
    #signal = signalState.create();
    get signal() {
      return this.#signal;
    }
    abort(reason = undefined) {
      signalState.abort(this.#signal, reason);
    }
  }
  tag(AbortController);

  // ---------------------------------------------------------------------------- timers

  // Each timer is one host "timer" op; an interval starts a new op after each run. Host timers
  // may complete out of order (equal delays race in the host), yet callbacks must run in
  // deadline order, ties in creation order, as in browsers. So a completion runs the most
  // overdue timer, not necessarily its own, whose turn then comes with a later completion:
  // one callback per completion, and every armed timer brings exactly one completion.
  const timers = new Map(); // id -> { callback, args, ms, repeat, op, deadline, ready }
  let lastTimerId = 0;
  // The latest deadline a completion has vouched for: the host's clock says it has passed,
  // whatever performance.now() (a different clock, with its own rounding) says.
  let horizon = -Infinity;
  const armTimer = (id, timer) => {
    const deadline = (timer.deadline = now() + timer.ms);
    timer.ready = false;
    const op = host.start("timer", { ms: timer.ms });
    timer.op = op.id;
    op.promise.then(
      () => timerDone(id, op.id, deadline),
      (err) => {
        if (timers.get(id)?.op !== op.id) return;
        timers.delete(id);
        report(err);
      },
    );
  };
  const timerDone = (id, opId, deadline) => {
    const own = timers.get(id);
    if (own && own.op === opId) own.ready = true;
    horizon = Math.max(horizon, deadline);
    const time = Math.max(now(), horizon);
    let nextId = 0;
    let next = null;
    for (const [tid, timer] of timers) {
      if (!timer.ready && timer.deadline > time) continue;
      if (!next || timer.deadline < next.deadline || (timer.deadline === next.deadline && tid < nextId)) {
        next = timer;
        nextId = tid;
      }
    }
    if (next) fireTimer(nextId, next);
  };
  const fireTimer = (id, timer) => {
    if (!timer.repeat) timers.delete(id);
    timer.op = 0; // its own completion, if still to come, is just a turn for another timer
    try {
      const returned = timer.callback.apply(globalThis, timer.args);
      // An async callback's failure is reported as a synchronous one's is.
      if (returned instanceof Promise) promiseThen.call(returned, undefined, report);
    } catch (err) {
      report(err);
    }
    // The callback may have cleared its own interval.
    if (!timer.repeat || timers.get(id) !== timer) return;
    try {
      armTimer(id, timer);
    } catch (err) {
      timers.delete(id);
      report(err);
    }
  };
  // Like browsers: negative, NaN and out-of-range (> 2^31-1) delays mean 0.
  const timerDelay = (ms) => {
    const n = Math.trunc(Number(ms));
    return n > 0 && n <= 0x7fffffff ? n : 0;
  };
  const schedule = (callback, ms, args, repeat) => {
    if (typeof callback !== "function") throw new TypeError("The \"callback\" argument must be of type function.");
    const id = ++lastTimerId;
    // An interval of 0 would re-arm without letting the host do anything else.
    const timer = { callback, args, ms: repeat ? Math.max(1, timerDelay(ms)) : timerDelay(ms), repeat, op: 0, deadline: 0, ready: false };
    timers.set(id, timer);
    try {
      armTimer(id, timer);
    } catch (err) {
      timers.delete(id);
      throw err;
    }
    return id;
  };
  // setTimeout and setInterval share one id space, so either clear function clears either.
  const clearTimer = (id) => {
    const key = typeof id === "number" ? id : Number(id);
    const timer = timers.get(key);
    if (!timer) return;
    timers.delete(key);
    if (timer.op) host.cancel(timer.op);
  };
  function setTimeout(callback, ms = 0, ...args) {
    return schedule(callback, ms, args, false);
  }
  function setInterval(callback, ms = 0, ...args) {
    return schedule(callback, ms, args, true);
  }
  function clearTimeout(id = undefined) {
    clearTimer(id);
  }
  function clearInterval(id = undefined) {
    clearTimer(id);
  }

  // --------------------------------------------------------------------------- Headers

  const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  const headerName = (name) => {
    name = String(name);
    if (!TOKEN.test(name)) throw new TypeError(`Headers: "${name}" is an invalid header name.`);
    return name.toLowerCase();
  };
  // Values are ByteStrings: trimmed of HTTP whitespace, no NUL/CR/LF, no char above U+00FF.
  const headerValue = (value) => {
    value = String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (/[\0\r\n]|[^\0-\xff]/.test(value)) throw new TypeError(`Headers: "${value}" is an invalid header value.`);
    return value;
  };

  const headersIterator = iteratorFactory("Headers Iterator");
  let headersState;
  class Headers {
    #list = []; // [lower-cased name, value] in insertion order, duplicates kept
    #sorted = null; // cache of the spec's "sort and combine", dropped on every change
    constructor(init = undefined) {
      if (init === undefined) return;
      if (!isObject(init)) throw new TypeError("Headers: init must be a sequence of pairs or a record");
      if (#list in init) {
        this.#list = init.#list.map(([n, v]) => [n, v]);
        return;
      }
      const iterate = init[Symbol.iterator];
      if (iterate != null) {
        if (typeof iterate !== "function") throw new TypeError("Headers: init is not iterable");
        for (const pair of init) {
          if (!isObject(pair) || typeof pair[Symbol.iterator] !== "function") {
            throw new TypeError("Headers: each header must be a [name, value] pair");
          }
          const items = [...pair];
          if (items.length !== 2) throw new TypeError("Headers: each header must be a [name, value] pair");
          this.append(items[0], items[1]);
        }
      } else {
        for (const key of Reflect.ownKeys(init)) {
          if (typeof key !== "string" || !Object.getOwnPropertyDescriptor(init, key)?.enumerable) continue;
          this.append(key, init[key]);
        }
      }
    }
    #changed() {
      this.#sorted = null;
    }
    #combined(name) {
      const values = [];
      for (const [n, v] of this.#list) if (n === name) values.push(v);
      return values.length ? values.join(", ") : null;
    }
    // Sorted by name; set-cookie is never combined (its values may contain commas).
    #pairs() {
      if (this.#sorted) return this.#sorted;
      const names = [...new Set(this.#list.map(([n]) => n))].sort();
      const out = [];
      for (const name of names) {
        if (name === "set-cookie") {
          for (const [n, v] of this.#list) if (n === name) out.push([n, v]);
        } else out.push([name, this.#combined(name)]);
      }
      return (this.#sorted = out);
    }
    append(name, value) {
      requireArgs(arguments, 2, "Headers.append");
      this.#list.push([headerName(name), headerValue(value)]);
      this.#changed();
    }
    delete(name) {
      requireArgs(arguments, 1, "Headers.delete");
      name = headerName(name);
      this.#list = this.#list.filter(([n]) => n !== name);
      this.#changed();
    }
    get(name) {
      requireArgs(arguments, 1, "Headers.get");
      return this.#combined(headerName(name));
    }
    getSetCookie() {
      return this.#list.filter(([n]) => n === "set-cookie").map(([, v]) => v);
    }
    has(name) {
      requireArgs(arguments, 1, "Headers.has");
      name = headerName(name);
      return this.#list.some(([n]) => n === name);
    }
    set(name, value) {
      requireArgs(arguments, 2, "Headers.set");
      name = headerName(name);
      value = headerValue(value);
      const at = this.#list.findIndex(([n]) => n === name);
      if (at < 0) this.#list.push([name, value]);
      else {
        this.#list[at] = [name, value];
        this.#list = this.#list.filter(([n], i) => i <= at || n !== name);
      }
      this.#changed();
    }
    forEach(callback, thisArg = undefined) {
      if (typeof callback !== "function") throw new TypeError("The \"callback\" argument must be of type function");
      // Index-based and re-read each time: the callback may change the headers.
      for (let i = 0; i < this.#pairs().length; i++) {
        const [name, value] = this.#pairs()[i];
        callback.call(thisArg, value, name, this);
      }
    }
    keys() {
      return pairIterator(headersIterator, () => this.#pairs(), "keys");
    }
    values() {
      return pairIterator(headersIterator, () => this.#pairs(), "values");
    }
    entries() {
      return pairIterator(headersIterator, () => this.#pairs(), "entries");
    }
    static {
      headersState = {
        list: (h) => h.#list,
        // Response headers from the host are taken as they come (already valid HTTP).
        fromHost(pairs) {
          const h = new Headers();
          h.#list = pairs.map(([n, v]) => [String(n).toLowerCase(), String(v)]);
          return h;
        },
      };
    }
  }
  Object.defineProperty(Headers.prototype, Symbol.iterator, {
    value: Headers.prototype.entries,
    writable: true,
    configurable: true,
  });
  tag(Headers);

  // ------------------------------------------------------------------ Request, Response

  // Bodies are bytes held whole: { bytes: Uint8Array | null, used }. `bytes` is never written,
  // so clones share it and every read hands out a copy.
  const extractBody = (body) => {
    if (body == null) return { bytes: null, type: null };
    if (typeof body === "string") return { bytes: utf8Encode(body), type: "text/plain;charset=UTF-8" };
    if (body instanceof URLSearchParams) {
      return { bytes: utf8Encode(String(body)), type: "application/x-www-form-urlencoded;charset=UTF-8" };
    }
    const bytes = viewBytes(body);
    if (bytes) return { bytes: bytes.slice(), type: null };
    // BodyInit ends in USVString, so any other object is sent as its string form.
    return { bytes: utf8Encode(toUSV(body)), type: "text/plain;charset=UTF-8" };
  };
  const consumeBody = (body, kind, signal) => {
    if (body.used) return Promise.reject(new TypeError("Body has already been consumed"));
    // A fetched body still belongs to the request: aborting it makes the body unreadable.
    if (signal?.aborted) return Promise.reject(signal.reason);
    const bytes = body.bytes ?? EMPTY;
    if (body.bytes) body.used = true; // an absent body can be "read" any number of times
    try {
      switch (kind) {
        case "text":
          return Promise.resolve(decodeUtf8(bytes, true));
        case "json":
          return Promise.resolve(JSON.parse(decodeUtf8(bytes, true)));
        case "arrayBuffer":
          return Promise.resolve(bytes.slice().buffer);
        default:
          return Promise.resolve(bytes.slice());
      }
    } catch (err) {
      return Promise.reject(err);
    }
  };
  const withContentType = (headers, type) => {
    if (type && !headers.has("content-type")) headers.append("content-type", type);
  };

  const NORMALIZED_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
  const FORBIDDEN_METHODS = ["CONNECT", "TRACE", "TRACK"];
  // Only the six methods above are upper-cased (the spec leaves "patch" alone; so do Node and
  // browsers, and so do servers that then answer 405 - write PATCH).
  const normalizeMethod = (method) => {
    method = String(method);
    if (!TOKEN.test(method)) throw new TypeError(`'${method}' is not a valid HTTP method.`);
    const upper = method.toUpperCase();
    if (FORBIDDEN_METHODS.includes(upper)) throw new TypeError(`'${method}' HTTP method is unsupported.`);
    return NORMALIZED_METHODS.includes(upper) ? upper : method;
  };
  // There is no document, so no base URL: only absolute URLs.
  const absoluteURL = (input) => {
    const text = toUSV(input);
    let parsed;
    try {
      parsed = host.url(text);
    } catch (err) {
      throw new TypeError(`Failed to parse URL from ${text}`, { cause: err });
    }
    return parsed;
  };
  const REDIRECTS = ["follow", "error", "manual"];

  let requestState;
  class Request {
    #url;
    #method = "GET";
    #headers;
    #body = { bytes: null, used: false };
    #signal;
    #redirect = "follow";
    constructor(input, init = undefined) {
      requireArgs(arguments, 1, "Request constructor");
      if (input === INTERNAL) {
        // clone(): the fields come ready-made.
        ({ url: this.#url, method: this.#method, headers: this.#headers, body: this.#body, signal: this.#signal, redirect: this.#redirect } = init);
        return;
      }
      const opts = dict(init, "RequestInit");
      const from = isObject(input) && #url in input ? input : null;
      if (from) {
        this.#url = from.#url;
        this.#method = from.#method;
        this.#redirect = from.#redirect;
      } else {
        const parsed = absoluteURL(input);
        if (parsed.username || parsed.password) {
          throw new TypeError(`Request cannot be constructed from a URL that includes credentials: ${parsed.href}`);
        }
        this.#url = parsed.href;
      }
      if (opts.method !== undefined) this.#method = normalizeMethod(opts.method);
      if (opts.redirect !== undefined) {
        const redirect = String(opts.redirect);
        if (!REDIRECTS.includes(redirect)) throw new TypeError(`'${redirect}' is not a valid value for redirect.`);
        this.#redirect = redirect;
      }
      let signal = from ? from.#signal : null;
      if (opts.signal !== undefined) {
        if (opts.signal !== null && !signalState.is(opts.signal)) {
          throw new TypeError("Request: init.signal must be an AbortSignal");
        }
        signal = opts.signal;
      }
      // The request's own signal follows the given one (and is what fetch listens to).
      this.#signal = signal ? AbortSignal.any([signal]) : signalState.create();
      this.#headers = new Headers(opts.headers !== undefined ? opts.headers : from ? from.#headers : undefined);

      const initBody = opts.body ?? null;
      const inputBody = from && from.#body.bytes ? from.#body : null;
      if ((initBody !== null || inputBody) && (this.#method === "GET" || this.#method === "HEAD")) {
        throw new TypeError("Request with GET/HEAD method cannot have body.");
      }
      if (initBody !== null) {
        const { bytes, type } = extractBody(initBody);
        this.#body = { bytes, used: false };
        withContentType(this.#headers, type);
      } else if (inputBody) {
        // The body moves to the new request; the old one counts as read, as in browsers.
        if (inputBody.used) throw new TypeError("Cannot construct a Request with a Request object that has already been used.");
        this.#body = { bytes: inputBody.bytes, used: false };
        inputBody.used = true;
      }
    }
    get method() {
      return this.#method;
    }
    get url() {
      return this.#url;
    }
    get headers() {
      return this.#headers;
    }
    get redirect() {
      return this.#redirect;
    }
    get signal() {
      return this.#signal;
    }
    /** Always null: there is no ReadableStream here; read the body with text()/json()/... */
    get body() {
      return null;
    }
    get bodyUsed() {
      return this.#body.used;
    }
    text() {
      return consumeBody(this.#body, "text");
    }
    json() {
      return consumeBody(this.#body, "json");
    }
    arrayBuffer() {
      return consumeBody(this.#body, "arrayBuffer");
    }
    bytes() {
      return consumeBody(this.#body, "bytes");
    }
    clone() {
      if (this.#body.used) throw new TypeError("Request.clone: Body has already been consumed.");
      return new Request(INTERNAL, {
        url: this.#url,
        method: this.#method,
        headers: new Headers(this.#headers),
        body: { bytes: this.#body.bytes, used: false },
        signal: AbortSignal.any([this.#signal]),
        redirect: this.#redirect,
      });
    }
    static {
      requestState = {
        is: (v) => isObject(v) && #url in v,
        parts: (r) => ({ url: r.#url, method: r.#method, headers: r.#headers, body: r.#body, signal: r.#signal, redirect: r.#redirect }),
      };
    }
  }
  tag(Request);

  const NULL_BODY_STATUSES = [101, 103, 204, 205, 304];
  const REDIRECT_STATUSES = [301, 302, 303, 307, 308];
  // WebIDL `unsigned short`: wraps modulo 2^16, so 65736 is 200.
  const toUint16 = (v) => {
    const n = Math.trunc(Number(v));
    return Number.isFinite(n) ? ((n % 65536) + 65536) % 65536 : 0;
  };

  class Response {
    #status = 200;
    #statusText = "";
    #headers;
    #body = { bytes: null, used: false };
    #type = "default";
    #url = "";
    #redirected = false;
    #signal = null; // a fetched response's request signal
    constructor(body = null, init = undefined) {
      if (body === INTERNAL) {
        // Responses made here (fetch, clone, the static methods) set their fields directly.
        ({
          status: this.#status = 200,
          statusText: this.#statusText = "",
          headers: this.#headers,
          body: this.#body = { bytes: null, used: false },
          type: this.#type = "default",
          url: this.#url = "",
          redirected: this.#redirected = false,
          signal: this.#signal = null,
        } = init);
        return;
      }
      Response.#setUp(this, init, body == null ? null : extractBody(body));
    }
    static #setUp(response, init, extracted) {
      const opts = dict(init, "ResponseInit");
      const status = opts.status === undefined ? 200 : toUint16(opts.status);
      if (status < 200 || status > 599) {
        throw new RangeError(`init["status"] must be in the range of 200 to 599, inclusive.`);
      }
      const statusText = opts.statusText === undefined ? "" : String(opts.statusText);
      if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(statusText)) throw new TypeError("Invalid statusText");
      response.#status = status;
      response.#statusText = statusText;
      response.#headers = new Headers(opts.headers);
      if (extracted) {
        if (NULL_BODY_STATUSES.includes(status)) {
          throw new TypeError(`Response constructor: Invalid response status code ${status}`);
        }
        response.#body = { bytes: extracted.bytes, used: false };
        withContentType(response.#headers, extracted.type);
      }
    }
    static error() {
      return new Response(INTERNAL, { type: "error", status: 0, headers: new Headers() });
    }
    static json(data, init = undefined) {
      requireArgs(arguments, 1, "Response.json");
      const text = JSON.stringify(data);
      if (text === undefined) throw new TypeError("Value is not JSON serializable");
      const response = new Response(INTERNAL, {});
      Response.#setUp(response, init, { bytes: utf8Encode(text), type: "application/json" });
      return response;
    }
    static redirect(url, status = 302) {
      requireArgs(arguments, 1, "Response.redirect");
      const href = absoluteURL(url).href;
      status = toUint16(status);
      if (!REDIRECT_STATUSES.includes(status)) throw new RangeError(`Invalid status code ${status}`);
      const headers = new Headers();
      headers.append("location", href);
      return new Response(INTERNAL, { status, headers });
    }
    get type() {
      return this.#type;
    }
    get url() {
      return this.#url;
    }
    get redirected() {
      return this.#redirected;
    }
    get status() {
      return this.#status;
    }
    get ok() {
      return this.#status >= 200 && this.#status <= 299;
    }
    get statusText() {
      return this.#statusText;
    }
    get headers() {
      return this.#headers;
    }
    /** Always null: there is no ReadableStream here; read the body with text()/json()/... */
    get body() {
      return null;
    }
    get bodyUsed() {
      return this.#body.used;
    }
    text() {
      return consumeBody(this.#body, "text", this.#signal);
    }
    json() {
      return consumeBody(this.#body, "json", this.#signal);
    }
    arrayBuffer() {
      return consumeBody(this.#body, "arrayBuffer", this.#signal);
    }
    bytes() {
      return consumeBody(this.#body, "bytes", this.#signal);
    }
    clone() {
      if (this.#body.used) throw new TypeError("Response.clone: Body has already been consumed.");
      return new Response(INTERNAL, {
        status: this.#status,
        statusText: this.#statusText,
        headers: new Headers(this.#headers),
        body: { bytes: this.#body.bytes, used: false },
        type: this.#type,
        url: this.#url,
        redirected: this.#redirected,
        signal: this.#signal,
      });
    }
  }
  tag(Response);

  // ----------------------------------------------------------------------------- fetch

  // Host failures (policy refusal, timeout, size cap, network) are TypeErrors as in browsers;
  // `.code` says which, `.cause` keeps the host's error.
  const networkError = (err) => {
    const message = isObject(err) && err.message ? String(err.message) : "fetch failed";
    const error = new TypeError(message, { cause: err });
    if (isObject(err) && err.code !== undefined) error.code = err.code;
    return error;
  };
  const withoutFragment = (url) => {
    const at = url.indexOf("#");
    return at < 0 ? url : url.slice(0, at);
  };

  function fetch(input, init = undefined) {
    return new Promise((resolve, reject) => {
      requireArgs(arguments, 1, "fetch");
      const request = new Request(input, init);
      const { url, method, headers, body, signal, redirect } = requestState.parts(request);
      if (signal.aborted) throw signal.reason;
      const headerList = headersState.list(headers).map(([n, v]) => [n, v]);
      if (!headers.has("accept")) headerList.push(["accept", "*/*"]); // as the fetch spec adds
      const op = host.start("fetch", {
        url: withoutFragment(url),
        method,
        headers: headerList,
        body: body.bytes ? toBase64(body.bytes) : null,
        redirect,
      });
      const forget = signalState.onAbort(signal, () => {
        host.cancel(op.id);
        reject(signal.reason);
      });
      op.promise.then(
        (res) => {
          forget();
          if (signal.aborted) return;
          try {
            const status = res.status;
            const empty = method === "HEAD" || NULL_BODY_STATUSES.includes(status);
            resolve(
              new Response(INTERNAL, {
                status,
                statusText: res.statusText ?? "",
                headers: headersState.fromHost(res.headers ?? []),
                body: { bytes: empty ? null : fromBase64(res.body ?? ""), used: false },
                type: "basic",
                url: withoutFragment(res.url ?? url),
                redirected: Boolean(res.redirected),
                signal,
              }),
            );
          } catch (err) {
            reject(networkError(err)); // a malformed host answer must still settle the call
          }
        },
        (err) => {
          forget();
          if (!signal.aborted) reject(networkError(err));
        },
      );
    });
  }

  // ---------------------------------------------------------------------------- crypto

  const INTEGER_ARRAYS = [
    "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array",
    "Int32Array", "Uint32Array", "BigInt64Array", "BigUint64Array",
  ];
  const DIGESTS = ["SHA-1", "SHA-256", "SHA-384", "SHA-512"];
  // WebCrypto algorithm identifiers: a name or { name }, compared ASCII case-insensitively.
  const digestName = (algorithm) => {
    const name = isObject(algorithm) ? algorithm.name : algorithm;
    if (name === undefined) throw new TypeError("Algorithm: name is required");
    const upper = String(name).toUpperCase();
    const found = DIGESTS.find((d) => d === upper);
    if (!found) throw new DOMException("Unrecognized algorithm name", "NotSupportedError");
    return found;
  };

  class SubtleCrypto {
    constructor(key = undefined) {
      if (key !== INTERNAL) throw new TypeError("Illegal constructor");
    }
    digest(algorithm, data) {
      return new Promise((resolve) => {
        requireArgs(arguments, 2, "SubtleCrypto.digest");
        const name = digestName(algorithm);
        const bytes = viewBytes(data);
        if (!bytes) throw new TypeError("SubtleCrypto.digest: data must be an ArrayBuffer or ArrayBufferView");
        resolve(fromBase64(host.digest(name, toBase64(bytes))).buffer);
      });
    }
  }
  tag(SubtleCrypto);

  class Crypto {
    #subtle = new SubtleCrypto(INTERNAL);
    constructor(key = undefined) {
      if (key !== INTERNAL) throw new TypeError("Illegal constructor");
    }
    get subtle() {
      return this.#subtle;
    }
    getRandomValues(array) {
      requireArgs(arguments, 1, "Crypto.getRandomValues");
      if (!ArrayBuffer.isView(array)) throw new TypeError("The \"array\" argument must be an integer-type TypedArray");
      if (!INTEGER_ARRAYS.includes(typedArrayName.call(array))) {
        throw new DOMException("The data argument must be an integer-type TypedArray", "TypeMismatchError");
      }
      const n = array.byteLength;
      if (n > 65536) {
        throw new DOMException(
          `The ArrayBufferView's byte length (${n}) exceeds the number of bytes of entropy available via this API (65536)`,
          "QuotaExceededError",
        );
      }
      if (n > 0) new Uint8Array(array.buffer, array.byteOffset, n).set(fromBase64(host.randomBytes(n)));
      return array;
    }
    randomUUID() {
      return host.uuid();
    }
  }
  tag(Crypto);

  // -------------------------------------------------------------------- structuredClone

  const ERROR_TYPES = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };
  const TYPED_ARRAYS = Object.fromEntries(
    [...INTEGER_ARRAYS, "Float16Array", "Float32Array", "Float64Array"]
      .filter((name) => typeof globalThis[name] === "function")
      .map((name) => [name, globalThis[name]]),
  );
  const objectToString = Object.prototype.toString;
  const objectTag = (v) => objectToString.call(v); // "[object Tag]"
  const cloneError = (v) => {
    let what;
    try {
      what = typeof v === "symbol" || typeof v === "function" ? String(v) : `#<${objectTag(v).slice(8, -1)}>`;
    } catch {
      what = "value";
    }
    return new DOMException(`${what} could not be cloned.`, "DataCloneError");
  };
  const regexpSource = getter(RegExp.prototype, "source");
  const regexpFlags = getter(RegExp.prototype, "flags");
  const dataViewLength = getter(DataView.prototype, "byteLength");
  const mapSize = getter(Map.prototype, "size");
  const setSize = getter(Set.prototype, "size");
  const unbox = (valueOf, v) => {
    const p = tryCall(valueOf, v);
    return p === NOT ? NOT : Object(p);
  };

  // Iterative, not recursive: deep data must not exhaust the engine's (small) stack. `clone`
  // returns at once; a container comes back as an empty shell (already in `memory`, so cycles
  // and shared references resolve to it) and `fill` queues the copying of its contents.
  class Cloner {
    memory = new Map();
    work = []; // [source, clone] pairs of objects and arrays, or fill functions
    fill(task) {
      this.work.push(task, null);
    }
    run(value) {
      const out = this.clone(value);
      const work = this.work;
      while (work.length) {
        const target = work.pop();
        const source = work.pop();
        if (target === null) source();
        else this.copy(source, target);
      }
      return out;
    }
    copyProperties(v, out) {
      this.work.push(v, out);
      return out;
    }
    // CreateDataProperty semantics: assignment, except where it would set the prototype.
    copy(v, out) {
      for (const key of Object.keys(v)) {
        let value = v[key];
        if (value !== null && (typeof value === "object" || typeof value === "function" || typeof value === "symbol")) {
          value = this.clone(value);
        }
        if (key === "__proto__") defineData(out, key, value);
        else out[key] = value;
      }
    }
    clone(v) {
      if (typeof v === "symbol" || typeof v === "function") throw cloneError(v);
      if (!isObject(v)) return v;
      const seen = this.memory.get(v);
      if (seen !== undefined) return seen;
      if (Array.isArray(v)) return this.copyProperties(v, this.remember(v, new Array(v.length)));
      const tag = objectTag(v);
      if (tag === "[object Object]") {
        const proto = Object.getPrototypeOf(v);
        if (proto === Object.prototype || proto === null) return this.copyProperties(v, this.remember(v, {}));
      }
      // The toString tag names the likely kind, so usually one brand check runs: each failed
      // one is a thrown exception, which QuickJS makes expensive. A lying tag costs the list.
      const hinted = kindOfTag[tag];
      let out = hinted ? this[hinted](v) : NOT;
      for (const kind of KINDS) {
        if (out !== NOT) break;
        if (kind !== hinted) out = this[kind](v);
      }
      if (out !== NOT) return this.memory.has(v) ? out : this.remember(v, out);
      if (notSerializable(v)) throw cloneError(v);
      // Class instances and the like: own enumerable data, prototype dropped.
      return this.copyProperties(v, this.remember(v, {}));
    }
    remember(v, out) {
      this.memory.set(v, out);
      return out;
    }
    // One method per serializable kind: the clone, or NOT when `v` is not of that kind.
    Boolean(v) {
      return unbox(Boolean.prototype.valueOf, v);
    }
    Number(v) {
      return unbox(Number.prototype.valueOf, v);
    }
    String(v) {
      return unbox(String.prototype.valueOf, v);
    }
    BigInt(v) {
      return unbox(BigInt.prototype.valueOf, v);
    }
    Symbol(v) {
      if (tryCall(Symbol.prototype.valueOf, v) !== NOT) throw cloneError(v);
      return NOT;
    }
    Date(v) {
      const time = tryCall(Date.prototype.getTime, v);
      return time === NOT ? NOT : new Date(time);
    }
    RegExp(v) {
      const source = v === RegExp.prototype ? NOT : tryCall(regexpSource, v);
      return source === NOT ? NOT : new RegExp(source, regexpFlags.call(v));
    }
    ArrayBuffer(v) {
      if (!isArrayBuffer(v)) return NOT;
      if (!v.resizable) return ArrayBuffer.prototype.slice.call(v, 0);
      const out = new ArrayBuffer(arrayBufferLength.call(v), { maxByteLength: v.maxByteLength });
      new Uint8Array(out).set(new Uint8Array(v));
      return out;
    }
    SharedArrayBuffer(v) {
      return isSharedArrayBuffer(v) ? v : NOT; // shared memory stays shared
    }
    View(v) {
      if (!ArrayBuffer.isView(v)) return NOT;
      const buffer = this.clone(v.buffer); // views of one buffer share its clone
      const name = typedArrayName.call(v);
      if (name === undefined && tryCall(dataViewLength, v) !== NOT) return new DataView(buffer, v.byteOffset, v.byteLength);
      if (TYPED_ARRAYS[name]) return new TYPED_ARRAYS[name](buffer, v.byteOffset, v.length);
      throw cloneError(v);
    }
    Map(v) {
      if (tryCall(mapSize, v) === NOT) return NOT;
      const out = this.remember(v, new Map());
      const entries = [...Map.prototype.entries.call(v)];
      this.fill(() => {
        for (const [key, value] of entries) out.set(this.clone(key), this.clone(value));
      });
      return out;
    }
    Set(v) {
      if (tryCall(setSize, v) === NOT) return NOT;
      const out = this.remember(v, new Set());
      const values = [...Set.prototype.values.call(v)];
      this.fill(() => {
        for (const value of values) out.add(this.clone(value));
      });
      return out;
    }
    DOMException(v) {
      return isDOMException(v) ? new DOMException(v.message, v.name) : NOT;
    }
    // No brand check exists for errors; [[ErrorData]] shows only in Object.prototype.toString.
    Error(v) {
      if (objectTag(v) !== "[object Error]") return NOT;
      const name = Object.hasOwn(ERROR_TYPES, v.name) ? v.name : "Error";
      const out = this.remember(v, new ERROR_TYPES[name]());
      const hidden = (key, value) => Object.defineProperty(out, key, { value, writable: true, configurable: true });
      const message = Object.getOwnPropertyDescriptor(v, "message");
      if (message && "value" in message) hidden("message", String(message.value));
      if (typeof v.stack === "string") hidden("stack", v.stack);
      if (Object.hasOwn(v, "cause")) hidden("cause", this.clone(v.cause));
      return out;
    }
  }
  const KINDS = ["Boolean", "Number", "String", "BigInt", "Symbol", "Date", "RegExp", "ArrayBuffer", "SharedArrayBuffer", "View", "Map", "Set", "DOMException", "Error"];
  const kindOfTag = { __proto__: null, "[object DataView]": "View" };
  for (const kind of KINDS) kindOfTag[`[object ${kind}]`] = kind;
  for (const name of Object.keys(TYPED_ARRAYS)) kindOfTag[`[object ${name}]`] = "View";
  const weakBrands = [
    WeakMap.prototype.has,
    WeakSet.prototype.has,
    typeof WeakRef === "function" ? WeakRef.prototype.deref : null,
    typeof FinalizationRegistry === "function" ? FinalizationRegistry.prototype.unregister : null,
  ].filter(Boolean);
  // Platform objects here are not serializable, except DOMException (a kind above).
  const PLATFORM = [URL, URLSearchParams, Headers, Request, Response, Event, EventTarget, AbortController, TextEncoder, TextDecoder, Crypto, SubtleCrypto];
  const notSerializable = (v) =>
    weakBrands.some((brand) => tryCall(brand, v) !== NOT) ||
    ["[object Promise]", "[object Generator]", "[object AsyncGenerator]"].includes(objectTag(v)) ||
    PLATFORM.some((C) => v instanceof C);

  // `transfer` is accepted and ignored: values are copied, nothing is detached.
  function structuredClone(value, options = undefined) {
    requireArgs(arguments, 1, "structuredClone");
    dict(options, "structuredClone options");
    return new Cloner().run(value);
  }

  // --------------------------------------------------------------------------- install

  for (const [name, value] of Object.entries({
    DOMException, TextEncoder, TextDecoder, URL, URLSearchParams, Event, CustomEvent, EventTarget,
    AbortSignal, AbortController, setTimeout, clearTimeout, setInterval, clearInterval, Headers,
    Request, Response, fetch, Crypto, SubtleCrypto, structuredClone,
  })) {
    define(name, value);
  }
  define("crypto", new Crypto(INTERNAL));
});
