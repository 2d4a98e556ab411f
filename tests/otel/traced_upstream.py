"""A minimal MCP server over Streamable HTTP (JSON answers) that writes down the W3C trace
context of every request it gets, for the gateway's telemetry tests (tests/gateway/telemetry.rs).

    python traced_upstream.py REQUESTS.jsonl

Listens on 127.0.0.1 (a port of the system's choosing, printed as `listening on PORT` on the
first line of stdout) at `/mcp`: answers `initialize`, `tools/list` (the tools `echo` and
`danger`) and `tools/call` (`echo` answers its `text`), accepts notifications with 202, and
appends one JSON line per message to REQUESTS.jsonl: its method, id, the `traceparent` and
`tracestate` HTTP headers, and `params._meta`. Standard library only. Stops on SIGTERM, or after
10 minutes whatever happens.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIFETIME_SECS = 600
TOOLS = [
    {"name": "echo", "description": "Answers its text.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "danger", "description": "Would do something nobody should.",
     "inputSchema": {"type": "object", "properties": {}}},
]


class Handler(BaseHTTPRequestHandler):
    out = None
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def answer(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body is not None:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self):
        self.answer(200)

    def do_GET(self):
        self.answer(405)

    def do_POST(self):
        if self.path != "/mcp":
            self.answer(404)
            return
        length = int(self.headers.get("content-length") or 0)
        message = json.loads(self.rfile.read(length))
        params = message.get("params") or {}
        with self.lock:
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({
                    "method": message.get("method"),
                    "id": message.get("id"),
                    "traceparent": self.headers.get("traceparent"),
                    "tracestate": self.headers.get("tracestate"),
                    "meta": params.get("_meta"),
                }) + "\n")
        if "id" not in message or "method" not in message:
            self.answer(202)
            return
        method, rid = message["method"], message["id"]
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "traced-upstream", "version": "1"}}
            self.answer(200, {"jsonrpc": "2.0", "id": rid, "result": result},
                        [("mcp-session-id", "traced-1")])
        elif method == "tools/list":
            self.answer(200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            text = (params.get("arguments") or {}).get("text", "")
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            self.answer(200, {"jsonrpc": "2.0", "id": rid, "result": result})
        else:
            self.answer(200, {"jsonrpc": "2.0", "id": rid,
                              "error": {"code": -32601, "message": f"no method {method}"}})


def main():
    Handler.out = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    timer = threading.Timer(LIFETIME_SECS, server.shutdown)
    timer.daemon = True
    timer.start()
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
