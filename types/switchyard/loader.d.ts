// `./loader` (also `@/lib/connectors/plugins/loader`): Krawall's PluginLoader. A module
// registers its connector plugins with `PluginLoader.register(plugin)` when it is evaluated;
// the host reads the registry afterwards. The registry is this module's own: it holds what
// this file registered, not the plugins of other directories.
/// <reference path="./globals.d.ts" />

import type { ConnectorPlugin, PluginConfigField, PluginMetadata } from "./types";

export declare class PluginLoader {
  private constructor();
  /** Adds a plugin, or replaces the one with the same `id`. */
  static register(plugin: ConnectorPlugin): void;
  /** Whether there was a plugin with that id to remove. */
  static unregister(pluginId: string): boolean;
  static get(pluginId: string): ConnectorPlugin | undefined;
  /** In registration order. */
  static getAll(): ConnectorPlugin[];
  /** The plugins compatible with `connectorType`, by ascending priority (default 100). */
  static getCompatible(connectorType: string): ConnectorPlugin[];
  /** By ascending priority (default 100). */
  static getAllSorted(): ConnectorPlugin[];
  static listMetadata(): PluginMetadata[];
  /** The plugin's `configSchema`; `undefined` for an unknown plugin or one without a schema. */
  static getPluginConfig(pluginId: string): PluginConfigField[] | undefined;
  /** One message per problem, in Krawall's words; empty when the config is valid. */
  static validatePluginConfig(pluginId: string, config: unknown): string[];
  /** @deprecated The same as `validatePluginConfig`, under the name older docs use. */
  static validateConfig(pluginId: string, config: unknown): string[];
  static isRegistered(pluginId: string): boolean;
  /** Removes every plugin this module registered. */
  static clear(): void;
}

export default PluginLoader;
