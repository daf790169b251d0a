// lib/connectors/plugins/response-logger-plugin.ts
import type { ConnectorPlugin, PluginContext, PluginConfigField } from "./types";
import type { ConnectorResponse, MessageMetadata } from "../base";
import { PluginLoader } from "./loader";
const configSchema: PluginConfigField[] = [
{
key: "logLevel",
label: "Log Level",
type: "select",
required: false,
default: "info",
description: "Verbosity of log output.",
options: [
{ label: "Info", value: "info" },
{ label: "Debug", value: "debug" },
],
},
{
key: "slowThresholdMs",
label: "Slow Threshold (ms)",
type: "number",
required: false,
default: 2000,
description: "Responses slower than this are flagged as slow.",
},
];
const responseLoggerPlugin: ConnectorPlugin = {
id: "response-logger",
name: "Response Logger Plugin",
description: "Logs response times and flags slow responses.",
version: "1.0.0",
priority: 190,
compatibleConnectors: ["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"],
configSchema,
async initialize(context: PluginContext): Promise<void> {
context.state.totalResponses = 0;
context.state.totalResponseTimeMs = 0;
context.state.slowResponses = 0;
context.state.slowThresholdMs = (context.pluginConfig?.slowThresholdMs as number) ?? 2000;
context.state.logLevel = (context.pluginConfig?.logLevel as string) ?? "info";
},
async beforeSend(
message: string,
_metadata: MessageMetadata | undefined,
context: PluginContext
): Promise<{ message: string; metadata?: Record<string, unknown> }> {
context.state.sendTimestamp = Date.now();
return { message };
},
async afterReceive(
response: ConnectorResponse,
context: PluginContext
): Promise<{ response: ConnectorResponse; metadata?: Record<string, unknown> }> {
const responseTimeMs = context.state.sendTimestamp
? Date.now() - (context.state.sendTimestamp as number)
: response.metadata.responseTimeMs;
context.state.totalResponses = (context.state.totalResponses as number) + 1;
context.state.totalResponseTimeMs = (context.state.totalResponseTimeMs as number) + responseTimeMs;
const threshold = context.state.slowThresholdMs as number;
if (responseTimeMs > threshold) {
context.state.slowResponses = (context.state.slowResponses as number) + 1;
console.warn(
`[response-logger] SLOW response: ${responseTimeMs}ms (threshold: ${threshold}ms) - session ${context.sessionId}`
);
} else if (context.state.logLevel === "debug") {
console.log(`[response-logger] Response: ${responseTimeMs}ms - session ${context.sessionId}`);
}
return { response };
},
async onDisconnect(context: PluginContext): Promise<void> {
const total = context.state.totalResponses as number;
const avgMs = total > 0
? Math.round((context.state.totalResponseTimeMs as number) / total)
: 0;
console.log(
`[response-logger] Session ${context.sessionId} summary: ${total} responses, avg ${avgMs}ms, ${context.state.slowResponses} slow`
);
},
onError(error: Error, hookName: string, context: PluginContext): void {
console.error(`[response-logger] Error in ${hookName} for session ${context.sessionId}:`, error.message);
},
};
// Auto-register
PluginLoader.register(responseLoggerPlugin);
export { responseLoggerPlugin };
