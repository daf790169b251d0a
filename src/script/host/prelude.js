// Evaluated once per engine before the plugin module. Builds `console`, the Open Astra
// context and the registry PluginLoader writes to, from the native functions in
// `__switchyard_host` (which it then hides). Rust calls the methods of `__switchyard`.
(() => {
  const host = globalThis.__switchyard_host;
  // Kept before the plugin runs: a plugin that replaces JSON.stringify only fools itself.
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  delete globalThis.__switchyard_host;

  const text = (args) =>
    args
      // QuickJS's `stack` has no "Name: message" line, so both are printed.
      .map((a) => (typeof a === "string" ? a : a instanceof Error ? (a.stack ? `${a}\n${a.stack}` : String(a)) : stringify(a)))
      .join(" ");
  globalThis.console = Object.freeze({
    log: (...a) => host.log("info", text(a)),
    info: (...a) => host.log("info", text(a)),
    warn: (...a) => host.log("warn", text(a)),
    error: (...a) => host.log("error", text(a)),
    debug: (...a) => host.log("debug", text(a)),
  });

  const matches = (pattern, name) =>
    pattern === "*" || pattern === name || (pattern.endsWith(".*") && name.startsWith(pattern.slice(0, -1)));
  const handlers = [];
  const bus = Object.freeze({
    on(pattern, handler) {
      if (typeof handler !== "function") throw new TypeError("getEventBus().on(pattern, handler): handler must be a function");
      host.on(String(pattern));
      handlers.push({ pattern: String(pattern), handler });
    },
    off(pattern, handler) {
      const i = handlers.findIndex((h) => h.pattern === String(pattern) && (handler === undefined || h.handler === handler));
      if (i >= 0) handlers.splice(i, 1);
    },
    emit(name, data) {
      host.emit(String(name), stringify(data === undefined ? null : data));
    },
  });

  // Host calls that finish later (inference, fetch, timers): the host runs them outside the
  // engine and settles the promise with `complete`. A cancelled one never settles.
  const pendingOps = new Map();
  const start = (op, payload) => {
    const id = host.request(op, stringify(payload));
    const promise = new Promise((resolve, reject) => pendingOps.set(id, { resolve, reject }));
    return { id, promise };
  };
  const request = (op, payload) => start(op, payload).promise;
  const cancel = (id) => {
    if (pendingOps.delete(id)) host.cancel(id);
  };
  globalThis.__switchyard_web({
    start, cancel,
    url: host.url, urlSet: host.urlSet, randomBytes: host.randomBytes, digest: host.digest, uuid: host.uuid,
    outOfMemory: host.outOfMemory,
  });
  delete globalThis.__switchyard_web;

  // Express-like routes. Handlers live here; the host keeps the table and calls `route`.
  const routeHandlers = new Map();
  const middleware = [];
  const app = {
    use(prefix, handler) {
      if (typeof prefix === "function") [prefix, handler] = ["/", prefix];
      if (typeof prefix !== "string" || !prefix.startsWith("/")) throw new TypeError("app.use([path], handler): path must start with '/'");
      if (typeof handler !== "function") throw new TypeError("app.use([path], handler): handler must be a function");
      middleware.push({ prefix: prefix.replace(/\/+$/, ""), handler });
    },
  };
  for (const method of ["get", "post", "put", "patch", "delete"]) {
    app[method] = (path, handler, options) => {
      if (typeof path !== "string" || !path.startsWith("/")) throw new TypeError(`app.${method}(path, handler): path must start with '/'`);
      if (typeof handler !== "function") throw new TypeError(`app.${method}(path, handler): handler must be a function`);
      const absolute = !!(options && options.absolute);
      const index = host.route(method.toUpperCase(), path, absolute, !!(options && options.public));
      routeHandlers.set(index, handler);
    };
  }
  Object.freeze(app);

  const makeReq = (r) => ({
    ...r,
    get(name) { return r.headers[String(name).toLowerCase()]; },
    header(name) { return r.headers[String(name).toLowerCase()]; },
  });
  const makeRes = () => {
    const out = { status: 200, headers: {}, body: { kind: "empty" }, sent: false };
    const res = {
      get sent() { return out.sent; },
      get headersSent() { return out.sent; },
      status(code) {
        if (!Number.isInteger(code) || code < 100 || code > 599) throw new TypeError(`res.status(${code}): not an HTTP status`);
        out.status = code;
        return res;
      },
      set(name, value) {
        if (typeof name === "object" && name) for (const [k, v] of Object.entries(name)) out.headers[k.toLowerCase()] = String(v);
        else out.headers[String(name).toLowerCase()] = String(value);
        return res;
      },
      header(name, value) { return res.set(name, value); },
      json(value) {
        out.body = { kind: "json", value: value === undefined ? null : value };
        out.sent = true;
        return res;
      },
      send(value) {
        if (value === undefined || value === null) out.body = { kind: "empty" };
        else if (typeof value === "string") out.body = { kind: "text", value };
        else if (typeof value === "number" || typeof value === "boolean") out.body = { kind: "text", value: String(value) };
        else out.body = { kind: "json", value };
        out.sent = true;
        return res;
      },
      end() { out.sent = true; return res; },
      sendStatus(code) { res.status(code); return res.send(String(code)); },
    };
    return { res, out };
  };

  // `client.chat(messages, { stream: true })`: an async iterator of chunks, `{ type: "delta",
  // text }` as the model sends them, then one `{ type: "done", result }` (what chat() resolves
  // to). The host runs the call and keeps what arrives; each next() takes the next chunk. A
  // failed call rejects next() with the same error chat() would; leaving the loop early
  // (break, return) lets the host forget the rest.
  const streamChat = (config, req) => {
    const opened = request("chat_stream", { config, request: req });
    let finished = false;
    const iterator = {
      [Symbol.asyncIterator]() {
        return iterator;
      },
      async next() {
        if (finished) return { done: true, value: undefined };
        try {
          const { streamId } = await opened;
          const chunk = await request("chat_next", { streamId });
          if (chunk.type === "done") finished = true;
          return { done: false, value: chunk };
        } catch (error) {
          finished = true;
          throw error;
        }
      },
      async return() {
        if (!finished) {
          finished = true;
          opened.then(({ streamId }) => request("chat_close", { streamId })).catch(() => {});
        }
        return { done: true, value: undefined };
      },
    };
    return iterator;
  };

  const tools = new Map();
  const logger = Object.freeze({
    info: (...a) => host.log("info", text(a)),
    warn: (...a) => host.log("warn", text(a)),
    error: (...a) => host.log("error", text(a)),
    debug: (...a) => host.log("debug", text(a)),
  });
  const ctx = Object.freeze({
    logger,
    app,
    getEventBus: () => bus,
    registerTool(tool) {
      if (!tool || typeof tool.name !== "string" || !tool.name) throw new TypeError("registerTool(tool): tool.name must be a non-empty string");
      if (typeof tool.execute !== "function") throw new TypeError(`registerTool: tool '${tool.name}' needs an execute(params) function`);
      host.tool(stringify({ name: tool.name, description: tool.description || "", parameters: tool.parameters === undefined ? null : tool.parameters }));
      tools.set(tool.name, tool);
    },
    registerAgentConfig(id, config) {
      if (typeof id !== "string" || !id) throw new TypeError("registerAgentConfig(id, config): id must be a non-empty string");
      host.agent(id, stringify(config === undefined ? null : config));
    },
    resolveClient(config) {
      host.client(stringify(config === undefined ? null : config));
      const chat = (messages, options) => {
        const req = Array.isArray(messages) ? { ...(options || {}), messages } : messages;
        if (req && req.stream === true) return streamChat(config, req);
        return request("chat", { config, request: req });
      };
      return Object.freeze({ config, chat });
    },
  });

  const registered = [];
  const isFn = (v) => typeof v === "function";
  // What `await` would wait for (a plugin's own thenable included).
  const isThenable = (v) => v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";
  // Awaits `value`, then maps it with `ok`; a failure goes to `failed` when given.
  const settle = async (value, ok, failed) => {
    let settled;
    try {
      settled = await value;
    } catch (error) {
      if (failed) return failed(error);
      throw error;
    }
    return ok(settled);
  };
  const HOOKS = ["initialize", "onConnect", "beforeSend", "afterReceive", "onChunk", "onDisconnect", "onError"];

  const calls = new Map();
  const thrown = new Map();
  let callSeq = 0;
  // Runs one connector hook of plugin `id`; `context` is what the plugin sees. Returns the
  // outcome, or a promise of it when the plugin's hook is async.
  const runConnector = (id, hook, input, context) => {
    let plugin;
    for (const p of registered) if (p.id === id) plugin = p;
    if (!plugin) throw new Error(`this module registers no connector plugin '${id}'`);
    const fn = plugin[hook];
    if (!isFn(fn)) return [true, null, context.state];
    let returned;
    if (hook === "beforeSend") returned = plugin.beforeSend(input.message, input.metadata, context);
    else if (hook === "afterReceive") returned = plugin.afterReceive(input.response, context);
    else if (hook === "onChunk") returned = plugin.onChunk(input.chunk, context);
    else if (hook === "onConnect") returned = plugin.onConnect(input, context);
    else returned = plugin[hook](context);
    if (isThenable(returned)) return settle(returned, (value) => finish(hook, value, context));
    return finish(hook, returned, context);
  };
  // A hook's outcome, `[skipped, result, state]` (an array: the host reads it by position,
  // which is cheaper than by key on every hook). onChunk: a string rewrites the chunk ("" drops it); anything else lets it
  // through. Lifecycle hooks (onConnect aside) have no result.
  const finish = (hook, value, context) => {
    if (hook === "onChunk") {
      return typeof value === "string" ? [false, { chunk: value }, context.state] : [true, null, context.state];
    }
    const result = hook === "beforeSend" || hook === "afterReceive" || hook === "onConnect" ? value : undefined;
    return [false, result === undefined ? null : result, context.state];
  };
  // A value the host kept (the upstream's raw answer, its headers): read, it is fetched once and
  // becomes a plain property; written, it is replaced; never read, the host puts its own copy
  // back into the answer (the accessor gives the host a marker while it reads the answer).
  // The accessors and their descriptors are made once, not per hook: per-call closures were
  // most of an `afterReceive` call and left cycles for the garbage collector.
  const SLOTS = Symbol("switchyard.kept");
  const own = (object, key, value) => Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  const keptAccessor = (key) => Object.freeze({
    enumerable: true,
    configurable: true,
    get() {
      const slots = this[SLOTS];
      const text = slots === undefined ? undefined : host.lazy(slots[key]);
      if (text === undefined || text.charCodeAt(0) === 0) return text;
      const value = parse(text);
      own(this, key, value);
      return value;
    },
    set(value) {
      own(this, key, value);
    },
  });
  const KEPT = { rawResponse: keptAccessor("rawResponse"), headers: keptAccessor("headers") };
  const unread = (object, key, slot) => {
    let slots = object[SLOTS];
    if (slots === undefined) object[SLOTS] = slots = {};
    slots[key] = slot;
    Object.defineProperty(object, key, KEPT[key]);
  };
  // Keeps a promise the host will poll; its number is what the host is given.
  const track = (promise) => {
    const id = ++callSeq;
    const slot = { state: "pending" };
    calls.set(id, slot);
    promise.then((v) => { slot.state = "ok"; slot.value = v; }, (e) => { slot.state = "err"; slot.error = e; });
    return id;
  };
  const state = {
    plugin: undefined,
    registered,
    register(plugin) {
      if (!plugin || typeof plugin !== "object") throw new TypeError("PluginLoader.register(plugin): plugin must be an object");
      const at = registered.findIndex((p) => p.id === plugin.id);
      if (at >= 0) registered[at] = plugin; else registered.push(plugin);
    },
    describe() {
      const problems = [];
      const p = state.plugin;
      let gateway = null, version = "", description = "", hasStart = false, hasStop = false;
      // A gateway plugin is a default export with `init`, or with a `name` that is not just a
      // registered connector plugin re-exported.
      const candidate = p && typeof p === "object" && ("init" in p || ("name" in p && !registered.includes(p)));
      if (candidate) {
        if (typeof p.name !== "string" || !p.name) problems.push("the default export is missing `name` (a non-empty string)");
        if (!isFn(p.init)) problems.push("the default export is missing `init` (a function)");
        if (typeof p.version !== "string") problems.push("the default export is missing `version` (a semver string)");
        for (const hook of ["start", "stop"]) if (hook in p && !isFn(p[hook])) problems.push(`the default export's \`${hook}\` must be a function`);
        gateway = typeof p.name === "string" ? p.name : null;
        version = typeof p.version === "string" ? p.version : "";
        description = typeof p.description === "string" ? p.description : "";
        hasStart = isFn(p.start);
        hasStop = isFn(p.stop);
      }
      const connectors = registered.map((c, i) => {
        const label = `connector plugin #${i + 1}${typeof c.id === "string" ? ` ('${c.id}')` : ""}`;
        for (const key of ["id", "name", "description", "version"]) {
          if (typeof c[key] !== "string" || (key !== "description" && !c[key])) problems.push(`${label} is missing \`${key}\` (a string)`);
        }
        if (!Array.isArray(c.compatibleConnectors) || !c.compatibleConnectors.every((x) => typeof x === "string")) {
          problems.push(`${label} is missing \`compatibleConnectors\` (an array of strings)`);
        }
        if (c.priority !== undefined && (typeof c.priority !== "number" || !Number.isFinite(c.priority))) problems.push(`${label}: \`priority\` must be a number`);
        if (c.configSchema !== undefined && !Array.isArray(c.configSchema)) problems.push(`${label}: \`configSchema\` must be an array`);
        for (const hook of HOOKS) if (hook in c && !isFn(c[hook])) problems.push(`${label}: \`${hook}\` must be a function`);
        return {
          id: c.id, name: c.name, description: c.description || "", version: c.version,
          priority: typeof c.priority === "number" ? c.priority : 100,
          compatibleConnectors: Array.isArray(c.compatibleConnectors) ? c.compatibleConnectors : [],
          configSchema: Array.isArray(c.configSchema) ? c.configSchema : [],
          hooks: HOOKS.filter((h) => isFn(c[h])),
        };
      });
      if (!gateway && connectors.length) {
        version = connectors[0].version || "";
        description = connectors[0].description;
      }
      return { gateway, version, description, connectors, problems, hasStart, hasStop };
    },
    init() {
      return state.plugin && isFn(state.plugin.init) ? state.plugin.init(ctx) : undefined;
    },
    start() {
      return state.plugin && isFn(state.plugin.start) ? state.plugin.start() : undefined;
    },
    stop() {
      return state.plugin && isFn(state.plugin.stop) ? state.plugin.stop() : undefined;
    },
    // A Krawall connector hook, called by the host directly (not through `begin`): the
    // context's parts come as arguments and the answer is `[skipped, result, state]`, or the
    // number of a call to poll when the plugin's hook returned a promise. No closure is made
    // on the synchronous path, which is most hooks.
    connector(id, hook, input, sessionId, targetId, connectorType, hookState, pluginConfig, kept) {
      for (let i = 0; i < kept.length; i += 2) unread(input.response.metadata, kept[i], kept[i + 1]);
      const context = { sessionId, targetId, state: hookState, pluginConfig, connector: { type: connectorType } };
      let out;
      try {
        out = runConnector(id, hook, input, context);
      } catch (error) {
        // onError gets what was thrown, not the host's description of it.
        thrown.set(id, { hook, error });
        throw error;
      }
      if (!isThenable(out)) return out;
      const failed = (error) => {
        thrown.set(id, { hook, error });
        throw error;
      };
      return track(settle(out, (v) => v, failed));
    },
    onError(id, message, hook, ctx) {
      const last = thrown.get(id);
      thrown.delete(id);
      const plugin = registered.find((p) => p.id === id);
      if (!plugin || !isFn(plugin.onError)) return;
      const context = { sessionId: ctx.sessionId, targetId: ctx.targetId, state: ctx.state, pluginConfig: ctx.pluginConfig, connector: { type: ctx.connectorType } };
      // The hook's own throw when it threw; the host's message when the host failed it (a
      // timeout, a refused result). Non-Error throws are wrapped, the value kept as `cause`.
      let error;
      if (last && last.hook === hook) {
        error = last.error instanceof Error ? last.error : new Error(String(last.error), { cause: last.error });
      } else {
        error = new Error(message);
      }
      return plugin.onError(error, hook, context);
    },
    // Runs `method`; a promise is kept here and polled by the host between host calls.
    begin(method, args) {
      const value = state[method](...args);
      if (!value || typeof value.then !== "function") return { done: true, value };
      return { done: false, id: track(value) };
    },
    poll(id) {
      const slot = calls.get(id);
      if (!slot) return { broken: `unknown call ${id}` };
      if (slot.state === "pending") return { pending: true };
      calls.delete(id);
      if (slot.state === "err") throw slot.error;
      return { pending: false, value: slot.value };
    },
    abandon(id) {
      calls.delete(id);
    },
    complete(id, ok, value) {
      const op = pendingOps.get(id);
      if (!op) return;
      pendingOps.delete(id);
      if (ok) op.resolve(value);
      else op.reject(Object.assign(new Error(value && value.message ? value.message : String(value)), { code: value && value.code }));
    },
    async route(index, r) {
      const handler = routeHandlers.get(index);
      if (!handler) throw new Error(`no route handler #${index}`);
      const req = makeReq(r);
      const { res, out } = makeRes();
      const chain = middleware
        .filter((m) => m.prefix === "" || r.mountPath === m.prefix || r.mountPath.startsWith(m.prefix + "/"))
        .map((m) => m.handler);
      chain.push(handler);
      let returned;
      for (const fn of chain) {
        let next = false;
        returned = await fn(req, res, () => { next = true; });
        if (out.sent || !next) break;
      }
      if (!out.sent) {
        if (returned === undefined) throw new Error(`${r.method} ${r.routePath}: the handler neither sent a response (res.json/res.send) nor returned a value`);
        res.json(returned);
      }
      return { status: out.status, headers: out.headers, body: out.body };
    },
    async tool(name, params) {
      const tool = tools.get(name);
      if (!tool) throw new Error(`this plugin registered no tool '${name}'`);
      const result = await tool.execute(params, { logger });
      return result === undefined ? null : result;
    },
    async dispatch(event) {
      for (const { pattern, handler } of handlers.slice()) {
        if (matches(pattern, event.event)) await handler(event.data, event);
      }
    },
    // Called by the host once the module is evaluated: the plugin can no longer swap the
    // host's entry points (it can only break its own engine, never the host).
    lock() {
      Object.freeze(state);
      Object.defineProperty(globalThis, "__switchyard", { value: state, writable: false, configurable: false, enumerable: false });
    },
  };
  globalThis.__switchyard = state;
})();
