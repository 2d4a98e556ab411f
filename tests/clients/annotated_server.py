"""An upstream MCP server outside the EKS catalogue, built with FastMCP (fastmcp 4.2.x), whose
tools say what they do only through their MCP annotations. tests/gateway/classes.rs puts it
behind the gateway under a policy of `class:` rules: the classes come from these annotations
(docs/catalog.md, "Tools outside the catalogue").

    python annotated_server.py        # stdio
"""

from fastmcp import FastMCP

mcp = FastMCP("annotated-upstream")


@mcp.tool(annotations={"readOnlyHint": True})
def lookup_ticket(ticket: str) -> str:
    return f"ticket {ticket}: open"


@mcp.tool(annotations={"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True})
def add_comment(ticket: str, text: str) -> str:
    return f"commented on {ticket}"


@mcp.tool(annotations={"destructiveHint": True})
def purge_queue(queue: str) -> str:
    return f"purged {queue}"


@mcp.tool
def mystery(x: str) -> str:
    return f"did something with {x}"


if __name__ == "__main__":
    mcp.run(show_banner=False)
