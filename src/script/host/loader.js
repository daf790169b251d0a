// Host module behind `./loader` and `@/lib/connectors/plugins/loader`: Krawall's PluginLoader.
// Registration is what matters here; the host reads the registry after the module evaluates.
const state = globalThis.__switchyard;
export const PluginLoader = Object.freeze({
  register(plugin) {
    state.register(plugin);
  },
  unregister(id) {
    const at = state.registered.findIndex((p) => p.id === id);
    if (at >= 0) state.registered.splice(at, 1);
  },
  get(id) {
    return state.registered.find((p) => p.id === id);
  },
  getAll() {
    return state.registered.slice();
  },
  isRegistered(id) {
    return state.registered.some((p) => p.id === id);
  },
});
export default PluginLoader;
