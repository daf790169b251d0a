// @ts-check
// __PLUGIN_ID__: an Open Astra gateway plugin (made by `switchyard plugin new`).
//
// init(ctx) runs at boot (what it registers goes live when it returns), start() once HTTP
// listens, stop() at shutdown. Try it on a running service:
//   curl 'http://127.0.0.1:8080/plugins/__PLUGIN_ID__/hello?name=you'
//   curl -X POST http://127.0.0.1:8080/api/tools/__PLUGIN_ID__-echo/invoke \
//        -H 'content-type: application/json' -d '{"params": {"text": "hi"}}'
// Edit and save with `switchyard --watch` running to reload it. `// @ts-check` and the JSDoc
// types let `types/node_modules/.bin/tsc -p <this directory>` and editors check it.

const PLUGIN_ID = "__PLUGIN_ID__";

/** @type {import("./types").Logger | undefined} */
let logger;
let greetings = 0;

/** @type {import("./types").GatewayPlugin} */
const plugin = {
  name: PLUGIN_ID,
  version: "0.1.0",
  description: "Says hello over HTTP and echoes text as a tool.",

  async init(ctx) {
    logger = ctx.logger;
    ctx.logger.info(`${PLUGIN_ID} initialising`);

    // GET /plugins/__PLUGIN_ID__/hello?name=you
    ctx.app.get("/hello", (req, res) => {
      greetings += 1;
      res.json({ hello: req.query.name ?? "world", from: PLUGIN_ID, greetings });
    });

    // POST /api/tools/__PLUGIN_ID__-echo/invoke {"params": {"text": "hi"}}; agents may call it too.
    ctx.registerTool({
      name: `${PLUGIN_ID}-echo`,
      description: "Echoes the text it is given, with its length.",
      parameters: {
        type: "object",
        properties: { text: { type: "string" } },
        required: ["text"],
        additionalProperties: false,
      },
      /** @param {{ text: string }} params */
      execute: async (params) => ({ echo: params.text, length: params.text.length }),
    });
  },

  start() {
    logger?.info(`${PLUGIN_ID} started`);
  },

  stop() {
    logger?.info(`${PLUGIN_ID} stopping after ${greetings} greetings`);
  },
};

export default plugin;
