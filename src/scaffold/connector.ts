// __PLUGIN_ID__: a Krawall connector plugin (made by `switchyard plugin new`).
//
// A session runs it when it names it:
//   POST /api/sessions {"targetId": "<target>", "plugins": [{"id": "__PLUGIN_ID__", "config": {"label": "demo"}}]}
// Each message then goes through beforeSend, the upstream, and afterReceive; the answer's
// metadata carries "__PLUGIN_ID__": {messageNumber, label, answerChars, roundTripMs}.
// Edit and save with `switchyard --watch` running to reload it; type-check it with
// `types/node_modules/.bin/tsc -p <this directory>`.
import type { ConnectorPlugin, PluginConfigField, PluginContext } from "./types";
import type { ConnectorResponse, MessageMetadata } from "../base";
import { PluginLoader } from "./loader";

const PLUGIN_ID = "__PLUGIN_ID__";

// Shown in GET /api/plugins/__PLUGIN_ID__/config-schema and checked when a session opens.
const configSchema: PluginConfigField[] = [
  {
    key: "label",
    label: "Label",
    type: "string",
    required: false,
    default: PLUGIN_ID,
    description: "Added to the metadata of every answer.",
  },
  {
    key: "logMessages",
    label: "Log messages",
    type: "boolean",
    required: false,
    default: true,
    description: "Log the length of every message and answer.",
  },
];

const label = (context: PluginContext): string =>
  typeof context.pluginConfig?.label === "string" ? context.pluginConfig.label : PLUGIN_ID;
const logging = (context: PluginContext): boolean => context.pluginConfig?.logMessages !== false;

const plugin: ConnectorPlugin = {
  id: PLUGIN_ID,
  name: "__PLUGIN_NAME__",
  description: "Counts messages and adds timing to every answer's metadata.",
  version: "0.1.0",
  // Lower runs first (default 100; auth plugins use 10).
  priority: 100,
  compatibleConnectors: ["HTTP_REST", "SSE", "WEBSOCKET", "GRPC"],
  configSchema,

  // Once per session. `state` is this plugin's own for the session (JSON values only).
  async initialize(context: PluginContext): Promise<void> {
    context.state.messages = 0;
  },

  // Before each message goes upstream: return it (changed or not), and metadata that later
  // plugins see (and the target's request template as `${name}` variables).
  async beforeSend(
    message: string,
    _metadata: MessageMetadata | undefined,
    context: PluginContext
  ): Promise<{ message: string; metadata?: Record<string, unknown> }> {
    const messageNumber = (context.state.messages as number) + 1;
    context.state.messages = messageNumber;
    context.state.sentAt = Date.now();
    if (logging(context)) {
      console.log(`[${PLUGIN_ID}] session ${context.sessionId}: message #${messageNumber}, ${message.length} chars`);
    }
    return { message, metadata: { [PLUGIN_ID]: { messageNumber, label: label(context) } } };
  },

  // After each answer: return it (changed or not) and metadata for the reply.
  async afterReceive(
    response: ConnectorResponse,
    context: PluginContext
  ): Promise<{ response: ConnectorResponse; metadata?: Record<string, unknown> }> {
    const roundTripMs = Date.now() - (context.state.sentAt as number);
    if (logging(context)) {
      console.log(`[${PLUGIN_ID}] session ${context.sessionId}: ${response.content.length} chars in ${roundTripMs} ms`);
    }
    const summary = {
      messageNumber: context.state.messages,
      label: label(context),
      answerChars: response.content.length,
      roundTripMs,
    };
    return { response, metadata: { [PLUGIN_ID]: summary } };
  },

  // One of this plugin's hooks threw or timed out.
  onError(error: Error, hookName: string, context: PluginContext): void {
    console.error(`[${PLUGIN_ID}] ${hookName} failed in session ${context.sessionId}: ${error.message}`);
  },
};

PluginLoader.register(plugin);
export { plugin };
