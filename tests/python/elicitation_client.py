"""Answers the gateway's approval questions as a client's user would, with the official Python
SDK (mcp 2.3.0) and its elicitation callback: accepts the first question, declines the second.

    python elicitation_client.py (--url URL | --stdio COMMAND ARGS...)

Calls `get_pod_logs` twice and prints, as JSON, the questions it was asked and what each call
returned. Used by tests/approvals.rs against `tollgate gateway` with a `via: elicitation` rule.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.types import ElicitResult


async def main() -> None:
    if sys.argv[1] == "--url":
        server = sys.argv[2]
    else:
        command = sys.argv[sys.argv.index("--stdio") + 1:]
        server = StdioServerParameters(command=command[0], args=command[1:])
    asked = []

    async def on_elicit(context, params):
        asked.append({"message": params.message, "mode": getattr(params, "mode", None)})
        return ElicitResult(action="accept" if len(asked) == 1 else "decline", content={} if len(asked) == 1 else None)

    out = {"calls": []}
    async with Client(server, mode="legacy", read_timeout_seconds=30, elicitation_callback=on_elicit) as client:
        out["protocol_version"] = client.protocol_version
        for _ in range(2):
            r = await client.call_tool(
                "get_pod_logs",
                {"cluster_name": "prod-eks", "namespace": "shop", "pod_name": "checkout-5c8b4-x9y8z"},
            )
            meta = r.meta or {}
            out["calls"].append({
                "is_error": r.is_error,
                "text": r.content[0].text if r.content else "",
                "decision": (meta.get("dev.tollgate/decision") or {}).get("decision"),
            })
    out["asked"] = asked
    json.dump(out, sys.stdout)


asyncio.run(main())
