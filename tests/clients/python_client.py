"""Runs the client matrix's plan (plan.json beside this file) with a Python client and prints
what the client showed, as JSON, for tests/clients.rs to check.

    python python_client.py --client sdk|fastmcp [--mode auto|legacy] (--url URL | --stdio COMMAND ARGS...)

`sdk` is the official MCP Python SDK (mcp 2.3.0) in the given mode (auto: the stateless
2026-07-28 protocol when the server offers it; legacy: `initialize`); `fastmcp` is FastMCP's
client (fastmcp 4.2.x, on top of the same SDK, auto mode). Every step's answer is read as the
client hands it to an application: a result object, or an exception the client raised (which
the test counts as a failure to surface the refusal).
"""

import asyncio
import json
import pathlib
import sys

PLAN = json.loads((pathlib.Path(__file__).parent / "plan.json").read_text())


def parse_args():
    # Everything after --stdio is the server's command line, `--` included.
    argv = sys.argv[1:]
    command = []
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, command = argv[:i], argv[i + 1:]
    opts = dict(zip(argv[::2], argv[1::2]))
    return opts.get("--client", "sdk"), opts.get("--mode", "auto"), opts.get("--url"), command


def step_of(result):
    """What one call gave the application: its error flag, first text and refusal detail."""
    meta = getattr(result, "meta", None) or {}
    content = result.content or []
    return {
        "is_error": bool(result.is_error),
        "text": content[0].text if content and hasattr(content[0], "text") else "",
        "decision": meta.get("dev.tollgate/decision"),
        "raised": None,
    }


async def run_sdk(mode, url, command):
    from mcp import Client, StdioServerParameters

    server = url or StdioServerParameters(command=command[0], args=command[1:])
    out = {"steps": []}
    async with Client(server, mode=mode, read_timeout_seconds=30) as client:
        out["protocol_version"] = client.protocol_version
        listed = await client.list_tools(cache_mode="bypass")
        out["tools"] = [t.name for t in listed.tools]
        for step in PLAN["steps"]:
            try:
                r = await client.call_tool(step["tool"], step["arguments"])
                out["steps"].append(step_of(r))
            except Exception as e:  # noqa: BLE001 - any exception is what the test reports
                out["steps"].append({"raised": f"{type(e).__name__}: {e}"})
    return out


async def run_fastmcp(url, command):
    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport
    from fastmcp.exceptions import ToolError

    transport = url or StdioTransport(command=command[0], args=command[1:])
    out = {"steps": []}
    async with Client(transport, timeout=30) as client:
        out["protocol_version"] = getattr(client, "protocol_version", None)
        tools = await client.list_tools()
        out["tools"] = [t.name for t in tools]
        for step in PLAN["steps"]:
            try:
                # FastMCP raises `ToolError` on every `isError` result unless told not to:
                # an application that wants to read tool errors as results passes this.
                r = await client.call_tool(step["tool"], step["arguments"], raise_on_error=False)
                out["steps"].append(step_of(r))
            except Exception as e:  # noqa: BLE001
                out["steps"].append({"raised": f"{type(e).__name__}: {e}"})
        # With its default, the refusal's text is the exception's message.
        try:
            await client.call_tool("DeleteAHORunBatch", {"batchId": "rb-0001"})
            out["default_raises"] = None
        except ToolError as e:
            out["default_raises"] = str(e)
    return out


async def main():
    client, mode, url, command = parse_args()
    if client == "sdk":
        out = await run_sdk(mode, url, command)
    else:
        out = await run_fastmcp(url, command)
    json.dump(out, sys.stdout)


asyncio.run(main())
