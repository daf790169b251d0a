// Host module behind `../base` and `@/lib/connectors/base`. Its types vanish with TypeScript;
// these are the runtime values Krawall's base module exports.
export class ConnectorError extends Error {
  constructor(message, originalError, statusCode) {
    super(message);
    this.name = "ConnectorError";
    this.originalError = originalError;
    this.statusCode = statusCode;
  }
}
export class BaseConnector {}
