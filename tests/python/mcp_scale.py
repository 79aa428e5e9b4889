"""Scales a Workload through `univrs mcp` over stdio with the official MCP Python SDK, as an AI
agent would, and prints the tool's answer.

Usage: mcp_scale.py UNIVRS_BIN KUBECONFIG NAMESPACE NAME REPLICAS
"""
import asyncio
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    univrs, kubeconfig, ns, name, replicas = sys.argv[1:6]
    params = StdioServerParameters(
        command=univrs,
        args=["mcp", "--stdio", "--kubeconfig", kubeconfig],
        env={"RUST_LOG": "warn"},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        r = await client.call_tool(
            "workload_scale", {"name": name, "namespace": ns, "replicas": int(replicas)}
        )
        assert not r.is_error, r.content
        print("ok", r.content[0].text if r.content else "", flush=True)


asyncio.run(main())
