"""Drives an MCP server with the official Python SDK (mcp 2.3.0) and prints what it saw as JSON.

    python mcp_client.py --mode auto|legacy (--url URL | --stdio COMMAND ARGS...)

Lists every tool (following `nextCursor`), cancels the HealthOmics run batch rb-0001 twice and
reads a Kubernetes deployment; the Rust test checks the printed summary. Used by
tests/mock_eks.rs against `tollgate mock-eks` (and later against the gateway).
"""

import argparse
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    # Everything after --stdio is the server's command line, `--` included (argparse would
    # swallow it).
    argv = sys.argv[1:]
    command = []
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, command = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--url")
    args = parser.parse_args(argv)
    if args.url:
        server = args.url
    else:
        server = StdioServerParameters(command=command[0], args=command[1:])
    out = {}
    async with Client(server, mode=args.mode, read_timeout_seconds=30) as client:
        out["protocol_version"] = client.protocol_version
        out["server_name"] = client.server_info.name if client.server_info else None
        names, cursor, pages = [], None, 0
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass") if hasattr(client, "list_tools") else None
            pages += 1
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if not cursor or pages > 1000:
                break
        out["tools"] = names
        out["pages"] = pages
        calls = []
        for _ in range(2):
            r = await client.call_tool("CancelAHORunBatch", {"batchId": "rb-0001"})
            calls.append({"is_error": r.is_error, "text": r.content[0].text})
        r = await client.call_tool(
            "manage_k8s_resource",
            {"operation": "read", "cluster_name": "prod-eks", "kind": "Deployment", "api_version": "apps/v1", "name": "web", "namespace": "shop"},
        )
        calls.append({"is_error": r.is_error, "text": r.content[0].text})
        out["calls"] = calls
    json.dump(out, sys.stdout)


asyncio.run(main())
