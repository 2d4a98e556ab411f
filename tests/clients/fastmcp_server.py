"""An upstream MCP server built with FastMCP (fastmcp 4.2.x), as Python users build them: typed
tools whose return types give every tool an `outputSchema`, so clients check each result's
`structuredContent` against it. Its tools carry the names of the plan's calls (plan.json), so
the client matrix runs the same policy and plan behind the gateway in front of it.

    python fastmcp_server.py stdio
    python fastmcp_server.py http PORT      # Streamable HTTP on http://127.0.0.1:PORT/mcp
"""

import sys
from typing import Any

from fastmcp import FastMCP
from pydantic import BaseModel

mcp = FastMCP("fastmcp-typed-upstream")


class Batch(BaseModel):
    batchId: str
    status: str
    runs: int


class Outcome(BaseModel):
    batchId: str
    done: bool


class Logs(BaseModel):
    pod: str
    lines: list[str]


class PolicyAttached(BaseModel):
    role: str
    policy: str


@mcp.tool
def GetAHOBatch(batchId: str) -> Batch:
    """Reads a run batch."""
    return Batch(batchId=batchId, status="RUNNING", runs=3)


@mcp.tool
def CancelAHORunBatch(batchId: str) -> Outcome:
    """Cancels a run batch."""
    return Outcome(batchId=batchId, done=True)


@mcp.tool
def DeleteAHORunBatch(batchId: str) -> Outcome:
    """Deletes a run batch."""
    return Outcome(batchId=batchId, done=True)


@mcp.tool
def DeleteAHOBatch(batchId: str) -> Outcome:
    """Deletes a batch."""
    return Outcome(batchId=batchId, done=True)


@mcp.tool
def get_pod_logs(cluster_name: str, namespace: str, pod_name: str) -> Logs:
    """Reads a pod's logs."""
    return Logs(pod=f"{cluster_name}/{namespace}/{pod_name}", lines=["started"])


@mcp.tool
def add_inline_policy(policy_name: str, role_name: str, permissions: list[dict[str, Any]] | dict[str, Any]) -> PolicyAttached:
    """Adds an inline IAM policy to a role."""
    return PolicyAttached(role=role_name, policy=policy_name)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        mcp.run(show_banner=False)
    else:
        mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[2]), show_banner=False, log_level="WARNING")
