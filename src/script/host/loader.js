// Host module behind `./loader` and `@/lib/connectors/plugins/loader`: Krawall's PluginLoader,
// with its semantics (a Map by id: re-registering keeps the position, `unregister` says whether
// something went). The host reads the registry once the module has evaluated; what is
// registered then is what the plugin provides.
const state = globalThis.__switchyard;
const DEFAULT_PRIORITY = 100;
const CONNECTOR_TYPES = ["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"];
const byPriority = (a, b) => (a.priority ?? DEFAULT_PRIORITY) - (b.priority ?? DEFAULT_PRIORITY);
const find = (id) => state.registered.find((p) => p.id === id);

export class PluginLoader {
  static register(plugin) {
    if (plugin && find(plugin.id)) console.warn(`Plugin "${plugin.id}" is already registered, overwriting`);
    for (const type of (plugin && Array.isArray(plugin.compatibleConnectors) ? plugin.compatibleConnectors : [])) {
      if (!CONNECTOR_TYPES.includes(type)) {
        console.warn(`Plugin "${plugin.id}" declares compatibility with "${type}" which is not registered`);
      }
    }
    state.register(plugin);
  }

  static unregister(pluginId) {
    const at = state.registered.findIndex((p) => p.id === pluginId);
    if (at < 0) return false;
    state.registered.splice(at, 1);
    return true;
  }

  static get(pluginId) {
    return find(pluginId);
  }

  static getAll() {
    return state.registered.slice();
  }

  static getCompatible(connectorType) {
    return state.registered
      .filter((p) => Array.isArray(p.compatibleConnectors) && p.compatibleConnectors.includes(connectorType))
      .sort(byPriority);
  }

  static getAllSorted() {
    return state.registered.slice().sort(byPriority);
  }

  static listMetadata() {
    return state.registered.map((p) => ({
      id: p.id,
      name: p.name,
      description: p.description,
      version: p.version,
      compatibleConnectors: p.compatibleConnectors,
      priority: p.priority,
    }));
  }

  static getPluginConfig(pluginId) {
    const plugin = find(pluginId);
    return plugin ? plugin.configSchema : undefined;
  }

  // Krawall's rules, message for message (the REST API validates with the same rules in Rust).
  static validatePluginConfig(pluginId, config) {
    const plugin = find(pluginId);
    if (!plugin) return [`Plugin "${pluginId}" is not registered`];
    const schema = plugin.configSchema;
    if (!schema || schema.length === 0) return [];
    if (typeof config !== "object" || config === null) return ["Config must be a non-null object"];
    const errors = [];
    for (const field of schema) {
      const value = config[field.key];
      if (field.required && (value === undefined || value === null || value === "")) {
        errors.push(`Field "${field.key}" is required`);
        continue;
      }
      if (value === undefined || value === null) continue;
      switch (field.type) {
        case "string":
          if (typeof value !== "string") errors.push(`Field "${field.key}" must be a string`);
          break;
        case "number":
          if (typeof value !== "number" || Number.isNaN(value)) errors.push(`Field "${field.key}" must be a number`);
          break;
        case "boolean":
          if (typeof value !== "boolean") errors.push(`Field "${field.key}" must be a boolean`);
          break;
        case "select":
          if (field.options && !field.options.some((o) => o.value === value)) {
            errors.push(`Field "${field.key}" must be one of: ${field.options.map((o) => o.value).join(", ")}`);
          }
          break;
        case "json":
          if (typeof value === "string") {
            try {
              JSON.parse(value);
            } catch {
              errors.push(`Field "${field.key}" must be valid JSON`);
            }
          }
          break;
      }
    }
    return errors;
  }

  // The name the issue tracker and older docs use.
  static validateConfig(pluginId, config) {
    return PluginLoader.validatePluginConfig(pluginId, config);
  }

  static isRegistered(pluginId) {
    return state.registered.some((p) => p.id === pluginId);
  }

  static clear() {
    state.registered.length = 0;
  }
}
export default PluginLoader;
