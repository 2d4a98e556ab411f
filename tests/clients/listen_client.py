"""Listens for tool list changes with the official Python SDK (mcp 2.3.0) in auto mode (the
stateless 2026-07-28 protocol's `subscriptions/listen`), as tests/clients.rs drives it:

    python listen_client.py URL

Lists the tools, opens the listen stream, prints `acknowledged` once the server has
acknowledged it (the test then changes the policy), waits (at most 30 s) for the first
`ToolsListChanged` event, lists the tools again and prints, as JSON, what it saw.
"""

import asyncio
import json
import sys

import anyio
from mcp import Client


async def main() -> None:
    out = {}
    async with Client(sys.argv[1], read_timeout_seconds=30) as client:
        out["protocol_version"] = client.protocol_version
        out["before"] = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
        async with client.listen(tools_list_changed=True) as sub:
            out["honored"] = str(getattr(sub, "honored", None))
            print("acknowledged", flush=True)
            with anyio.fail_after(30):
                async for event in sub:
                    out["event"] = type(event).__name__
                    break
        out["after"] = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
    print(json.dumps(out), flush=True)


asyncio.run(main())
