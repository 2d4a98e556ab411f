"""A scriptable, hostile upstream MCP server over stdio, for tests/multi_hostile.rs.

Usage: hostile_upstream.py NAME JOURNAL [EXTRA_TOOL ...]

Every message it reads is appended to JOURNAL (one JSON line `{"got": MESSAGE}`, written and
flushed before anything else is done with it), so a test can prove what reached this upstream
and what did not. It lists the tools below plus each EXTRA_TOOL name (which behave as `echo`);
an EXTRA_TOOL `big:N:BYTES` stands for N tools `big0`… whose descriptions are BYTES long.
Every answer's text starts with NAME, so the client can tell which upstream answered.

Tools (their arguments steer the misbehaviour):
- `echo`: answers `NAME:echo:ID`.
- `ask` {id, method?, token?}: sends the client a request (`sampling/createMessage` unless
  `method`) with the id `id` (and the progress token `token`), then answers the call.
- `progress` {token}: sends `notifications/progress` for `token`, then answers.
- `cancel` {requestId}: sends `notifications/cancelled` naming `requestId`, then answers.
- `wrong_id` {ids}: answers with each id of `ids` instead of the call's.
- `twice`: answers twice (`NAME:first`, then `NAME:second`).
- `huge` {bytes}: answers with a text of that many bytes.
- `sleep` {ms}: answers after `ms` milliseconds (messages read meanwhile are handled).
- `hang`: never answers.
- `die`: exits at once (status 3) without answering.
"""

import json
import os
import sys
import threading

NAME = sys.argv[1]
JOURNAL = open(sys.argv[2], "a", encoding="utf-8")
EXTRA = sys.argv[3:]
LOCK = threading.Lock()

BASE = ["echo", "ask", "progress", "cancel", "wrong_id", "twice", "huge", "sleep", "hang", "die"]


def send(message):
    with LOCK:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def text_result(mid, text):
    return {"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}}


def tool(name, description=None):
    return {
        "name": name,
        "description": description or f"{name} of {NAME}",
        "inputSchema": {"type": "object", "additionalProperties": True},
    }


def tools():
    out = []
    for name in BASE + EXTRA:
        if name.startswith("big:"):
            _, n, size = name.split(":")
            out += [tool(f"big{k}", "d" * int(size)) for k in range(int(n))]
        else:
            out.append(tool(name))
    return out


def call(mid, params):
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "ask":
        ask = {"messages": [{"role": "user", "content": {"type": "text", "text": f"from {NAME}"}}], "maxTokens": 5}
        if "token" in args:
            ask["_meta"] = {"progressToken": args["token"]}
        send({"jsonrpc": "2.0", "id": args["id"], "method": args.get("method", "sampling/createMessage"), "params": ask})
    elif name == "progress":
        send({"jsonrpc": "2.0", "method": "notifications/progress",
              "params": {"progressToken": args["token"], "progress": 1, "message": f"from {NAME}"}})
    elif name == "cancel":
        send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": args["requestId"], "reason": f"from {NAME}"}})
    elif name == "wrong_id":
        for other in args["ids"]:
            send(text_result(other, f"{NAME}:wrong_id"))
        return
    elif name == "twice":
        send(text_result(mid, f"{NAME}:first"))
        send(text_result(mid, f"{NAME}:second"))
        return
    elif name == "huge":
        send(text_result(mid, NAME + ":" + "x" * int(args["bytes"])))
        return
    elif name == "sleep":
        timer = threading.Timer(int(args["ms"]) / 1000, send, [text_result(mid, f"{NAME}:sleep:{json.dumps(mid)}")])
        timer.daemon = True
        timer.start()
        return
    elif name == "hang":
        return
    elif name == "die":
        os._exit(3)
    send(text_result(mid, f"{NAME}:{name}:{json.dumps(mid)}"))


def handle(message):
    if not isinstance(message, dict):
        return
    method = message.get("method")
    mid = message.get("id")
    if method is None or "id" not in message:
        return
    params = message.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": f"hostile-{NAME}", "version": "0"},
        }})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": tools()}})
    elif method == "tools/call":
        call(mid, params)
    else:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        message = json.loads(line)
    except ValueError:
        message = {"unparsed": line}
    JOURNAL.write(json.dumps({"got": message}) + "\n")
    JOURNAL.flush()
    if isinstance(message, list):
        for item in message:
            handle(item)
    else:
        handle(message)
