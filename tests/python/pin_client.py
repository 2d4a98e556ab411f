"""A rug pull seen through the official Python SDK (mcp 2.3.0); prints what it saw as JSON.

    python pin_client.py --mode legacy --trigger TOOL --target TOOL (--url URL | --stdio COMMAND ARGS...)

Lists every tool, calls TRIGGER (the mock's `rug_pull` fault then changes TARGET's description
and sends `notifications/tools/list_changed`), lists every tool again and calls TARGET. Used by
tests/pin.rs in front of `tollgate gateway --lock`.
"""

import argparse
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters

ARGUMENTS = {
    "list_k8s_resources": {"cluster_name": "prod-eks", "kind": "Pod", "api_version": "v1", "namespace": "shop"},
    "get_pod_logs": {"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "web-1"},
}


async def list_all(client):
    tools, cursor = {}, None
    for _ in range(1000):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        for t in page.tools:
            tools[t.name] = t.description
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


async def call(client, name):
    r = await client.call_tool(name, ARGUMENTS.get(name, {}))
    meta = r.meta or {}
    decision = meta.get("dev.tollgate/decision", {})
    return {"is_error": r.is_error, "text": r.content[0].text if r.content else None, "decision": decision.get("decision")}


async def main() -> None:
    argv = sys.argv[1:]
    command = []
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, command = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--url")
    parser.add_argument("--trigger", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    server = args.url if args.url else StdioServerParameters(command=command[0], args=command[1:])
    out = {}
    async with Client(server, mode=args.mode, read_timeout_seconds=30) as client:
        before = await list_all(client)
        out["before"] = {"count": len(before), "target": before.get(args.target)}
        out["trigger"] = await call(client, args.trigger)
        after = await list_all(client)
        out["after"] = {"count": len(after), "target": after.get(args.target), "listed": args.target in after}
        out["target"] = await call(client, args.target)
    json.dump(out, sys.stdout)


asyncio.run(main())
