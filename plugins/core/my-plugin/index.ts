// lib/connectors/plugins/my-plugin.ts
import type { ConnectorPlugin, PluginContext, PluginConfigField } from "./types";
import type { ConnectorResponse, MessageMetadata } from "../base";
import { PluginLoader } from "./loader";

const myPlugin: ConnectorPlugin = {
  id: "my-plugin",
  name: "My Custom Plugin",
  description: "Logs message lengths and adds a custom header.",
  version: "1.0.0",
  priority: 100,
  compatibleConnectors: ["HTTP_REST"],

  async initialize(context: PluginContext): Promise<void> {
    context.state.messageCount = 0;
  },

  async beforeSend(
    message: string,
    _metadata: MessageMetadata | undefined,
    context: PluginContext
  ): Promise<{ message: string; metadata?: Record<string, unknown> }> {
    context.state.messageCount = (context.state.messageCount as number) + 1;
    console.log(`[my-plugin] Sending message #${context.state.messageCount} (${message.length} chars)`);
    return { message }; // pass through unmodified
  },

  async afterReceive(
    response: ConnectorResponse,
    context: PluginContext
  ): Promise<{ response: ConnectorResponse; metadata?: Record<string, unknown> }> {
    console.log(`[my-plugin] Received ${response.content.length} chars`);
    return { response }; // pass through unmodified
  },

  onError(error: Error, hookName: string, context: PluginContext): void {
    console.error(`[my-plugin] Error in ${hookName} for session ${context.sessionId}:`, error.message);
  },
};

// Auto-register
PluginLoader.register(myPlugin);
export { myPlugin };
