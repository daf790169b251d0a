// Evaluated once per engine before the plugin module. Builds `console`, the Open Astra
// context and the registry PluginLoader writes to, from the native functions in
// `__switchyard_host` (which it then hides). Rust calls the methods of `__switchyard`.
(() => {
  const host = globalThis.__switchyard_host;
  delete globalThis.__switchyard_host;

  const text = (args) =>
    args
      .map((a) => (typeof a === "string" ? a : a instanceof Error ? a.stack || String(a) : JSON.stringify(a)))
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
      host.emit(String(name), JSON.stringify(data === undefined ? null : data));
    },
  });

  const routes = [];
  const middleware = [];
  const app = { use(handler) {
    if (typeof handler !== "function") throw new TypeError("app.use(handler): handler must be a function");
    middleware.push(handler);
  } };
  for (const method of ["get", "post", "put", "patch", "delete"]) {
    app[method] = (path, handler) => {
      if (typeof path !== "string" || !path.startsWith("/")) throw new TypeError(`app.${method}(path, handler): path must start with '/'`);
      if (typeof handler !== "function") throw new TypeError(`app.${method}(path, handler): handler must be a function`);
      routes.push({ method: method.toUpperCase(), path, handler });
      host.record("route", JSON.stringify({ method: method.toUpperCase(), path }));
    };
  }
  Object.freeze(app);

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
      if (tools.has(tool.name)) throw new Error(`registerTool: tool '${tool.name}' is already registered by this plugin`);
      tools.set(tool.name, tool);
      host.record("tool", JSON.stringify({ name: tool.name, description: tool.description || "", parameters: tool.parameters || {} }));
    },
    registerAgentConfig(id, config) {
      if (typeof id !== "string" || !id) throw new TypeError("registerAgentConfig(id, config): id must be a non-empty string");
      host.record("agent", JSON.stringify({ id, config: config === undefined ? null : config }));
    },
    resolveClient(config) {
      host.record("client", JSON.stringify(config === undefined ? null : config));
      const unavailable = async () => {
        throw new Error("inference calls are not available in this version of switchyard (the client was recorded)");
      };
      return Object.freeze({ config, chat: unavailable, complete: unavailable });
    },
  });

  const registered = [];
  const isFn = (v) => typeof v === "function";
  const HOOKS = ["initialize", "onConnect", "beforeSend", "afterReceive", "onDisconnect", "onError"];

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
    // A Krawall connector hook. The context is rebuilt from the session's copy for each call,
    // and its (possibly changed) state is handed back.
    async connector(id, hook, input, ctx) {
      const plugin = registered.find((p) => p.id === id);
      if (!plugin) throw new Error(`this module registers no connector plugin '${id}'`);
      if (!isFn(plugin[hook])) return { skipped: true, state: ctx.state };
      const context = {
        sessionId: ctx.sessionId,
        targetId: ctx.targetId,
        state: ctx.state,
        pluginConfig: ctx.pluginConfig,
        connector: { type: ctx.connectorType },
      };
      let result;
      if (hook === "onConnect") result = await plugin.onConnect(input, context);
      else if (hook === "beforeSend") result = await plugin.beforeSend(input.message, input.metadata, context);
      else if (hook === "afterReceive") result = await plugin.afterReceive(input.response, context);
      else await plugin[hook](context);
      return { skipped: false, result: result === undefined ? null : result, state: context.state };
    },
    onError(id, message, hook, ctx) {
      const plugin = registered.find((p) => p.id === id);
      if (!plugin || !isFn(plugin.onError)) return;
      const context = { sessionId: ctx.sessionId, targetId: ctx.targetId, state: ctx.state, pluginConfig: ctx.pluginConfig };
      plugin.onError(new Error(message), hook, context);
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
