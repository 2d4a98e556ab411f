// Lists a gateway's tools and calls some with the official TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in .ci/node); prints what it saw as JSON. Used by
// tests/multi_real.rs against one gateway in front of several real upstreams.
//
//   node multi_client.cjs [--call NAME ARGS_JSON]... (--url URL | --stdio COMMAND ARGS...)
//
// Environment: NODE_DIR, the folder whose node_modules holds the SDK (.ci/node). A call the SDK
// raises on (a JSON-RPC error answer) is reported under `raised`.
"use strict";

const nodeDir = process.env.NODE_DIR;
if (!nodeDir) throw new Error("NODE_DIR is not set");
const sdk = (sub) => require(require.resolve(`@modelcontextprotocol/sdk/${sub}`, { paths: [nodeDir] }));
const { Client } = sdk("client/index.js");
const { StdioClientTransport } = sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = sdk("client/streamableHttp.js");

async function main() {
  const argv = process.argv.slice(2);
  const calls = [];
  while (argv[0] === "--call") {
    calls.push({ name: argv[1], arguments: JSON.parse(argv[2]) });
    argv.splice(0, 3);
  }
  let transport;
  if (argv[0] === "--url") {
    transport = new StreamableHTTPClientTransport(new URL(argv[1]));
  } else if (argv[0] === "--stdio") {
    transport = new StdioClientTransport({ command: argv[1], args: argv.slice(2), stderr: "ignore", env: process.env });
  } else {
    throw new Error("usage: multi_client.cjs [--call NAME ARGS]... (--url URL | --stdio COMMAND ARGS...)");
  }
  const client = new Client({ name: "tollgate-multi-ts", version: "1" });
  await client.connect(transport);
  const out = { tools: [], calls: [] };
  let cursor;
  for (let page = 0; page < 100; page++) {
    const listed = await client.listTools(cursor ? { cursor } : undefined);
    out.tools.push(...listed.tools.map((t) => t.name));
    cursor = listed.nextCursor;
    if (!cursor) break;
  }
  for (const call of calls) {
    try {
      const r = await client.callTool(call);
      const first = (r.content || [])[0];
      out.calls.push({ name: call.name, is_error: Boolean(r.isError), text: first && first.type === "text" ? first.text : "" });
    } catch (e) {
      out.calls.push({ name: call.name, raised: `${e.name}: ${e.message}` });
    }
  }
  await client.close();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
