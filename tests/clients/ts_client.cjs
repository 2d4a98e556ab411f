// Runs the client matrix's plan (plan.json beside this file) with the official TypeScript SDK
// (@modelcontextprotocol/sdk 1.32.x, pinned in .ci/node) and prints what the client showed, as
// JSON, for tests/clients.rs to check.
//
//   node ts_client.cjs (--url URL | --stdio COMMAND ARGS...)
//
// Environment: NODE_DIR, the folder whose node_modules holds the SDK (.ci/node). The SDK checks
// a result's `structuredContent` against the tool's `outputSchema` (even when `isError` is
// true) and throws on a mismatch: a refusal it throws on is reported under `raised`.
"use strict";

const fs = require("fs");
const path = require("path");

const nodeDir = process.env.NODE_DIR;
if (!nodeDir) throw new Error("NODE_DIR is not set");
const sdk = (sub) => require(require.resolve(`@modelcontextprotocol/sdk/${sub}`, { paths: [nodeDir] }));
const { Client } = sdk("client/index.js");
const { StdioClientTransport } = sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = sdk("client/streamableHttp.js");

const plan = JSON.parse(fs.readFileSync(path.join(__dirname, "plan.json"), "utf8"));

async function main() {
  const argv = process.argv.slice(2);
  let transport;
  if (argv[0] === "--url") {
    transport = new StreamableHTTPClientTransport(new URL(argv[1]));
  } else if (argv[0] === "--stdio") {
    transport = new StdioClientTransport({ command: argv[1], args: argv.slice(2), stderr: "ignore" });
  } else {
    throw new Error("usage: ts_client.cjs (--url URL | --stdio COMMAND ARGS...)");
  }
  const client = new Client({ name: "tollgate-client-matrix", version: "1" });
  await client.connect(transport);
  const out = { steps: [] };
  const listed = await client.listTools();
  out.tools = listed.tools.map((t) => t.name);
  for (const step of plan.steps) {
    try {
      const r = await client.callTool({ name: step.tool, arguments: step.arguments });
      const first = (r.content || [])[0];
      out.steps.push({
        is_error: Boolean(r.isError),
        text: first && first.type === "text" ? first.text : "",
        decision: (r._meta || {})["dev.tollgate/decision"] ?? null,
        raised: null,
      });
    } catch (e) {
      out.steps.push({ raised: `${e.name}: ${e.message}` });
    }
  }
  await client.close();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
