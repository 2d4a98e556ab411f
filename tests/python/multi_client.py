"""Lists a server's tools and calls some, with the official Python SDK (mcp 2.3.0); prints what
it saw as JSON. Used by tests/multi.rs against a gateway in front of several upstreams.

    python multi_client.py --mode auto|legacy [--call NAME ARGS_JSON]...
        [--ready FILE --killed FILE [--then NAME ARGS_JSON]... --checked FILE --back NAME
        [--finally NAME ARGS_JSON]...] (--url URL | --stdio COMMAND ARGS...)

Lists the tools and calls each `--call`. With `--ready`: writes that file, waits for the test to
write `--killed` (it killed an upstream), lists until `--back` is gone and calls each `--then`, writes
`--checked`, then lists until the tool `--back` is listed again (the upstream restarted) and
calls each `--finally`. Every wait is bounded (30 s).
"""

import argparse
import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


async def call(client, name, args):
    try:
        r = await client.call_tool(name, json.loads(args))
        return {"name": name, "is_error": r.is_error, "text": r.content[0].text if r.content else ""}
    except Exception as e:  # a JSON-RPC error answer
        return {"name": name, "error": str(e)}


async def list_names(client):
    names, cursor = [], None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return names


async def main() -> None:
    argv = sys.argv[1:]
    command = []
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, command = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--url")
    parser.add_argument("--call", nargs=2, action="append", default=[])
    parser.add_argument("--then", nargs=2, action="append", default=[])
    parser.add_argument("--finally", dest="fin", nargs=2, action="append", default=[])
    parser.add_argument("--ready")
    parser.add_argument("--killed")
    parser.add_argument("--checked")
    parser.add_argument("--back")
    args = parser.parse_args(argv)
    server = args.url if args.url else StdioServerParameters(command=command[0], args=command[1:])
    out = {}
    async with Client(server, mode=args.mode, read_timeout_seconds=30) as client:
        out["tools"] = await list_names(client)
        out["calls"] = [await call(client, n, a) for n, a in args.call]
        if args.ready:
            with open(args.ready, "w") as f:
                f.write("ready")
            for _ in range(300):
                if os.path.exists(args.killed):
                    break
                await asyncio.sleep(0.1)
            # The gateway hears of the exit at once, but after this file is written.
            out["gone"] = False
            for _ in range(300):
                names = await list_names(client)
                if args.back not in names:
                    out["gone"] = True
                    break
                await asyncio.sleep(0.1)
            out["tools_after_kill"] = names
            out["then"] = [await call(client, n, a) for n, a in args.then]
            with open(args.checked, "w") as f:
                f.write("checked")
            out["back"] = False
            for _ in range(300):
                if args.back in await list_names(client):
                    out["back"] = True
                    break
                await asyncio.sleep(0.1)
            out["finally"] = [await call(client, n, a) for n, a in args.fin]
    json.dump(out, sys.stdout)


asyncio.run(main())
