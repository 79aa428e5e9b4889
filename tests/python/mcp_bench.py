"""Times tool calls through `univrs mcp` with the official MCP Python SDK, over stdio and over
streamable HTTPS with the bearer token. Prints a Markdown table; asserts nothing about speed.

Usage: mcp_bench.py UNIVRS_BIN KUBECONFIG NAMESPACE URL TOKEN_FILE CA_CERT CALLS
"""
import asyncio
import ssl
import statistics
import sys
import time

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


async def timed(client: Client, calls: int, tool: str, args) -> list[float]:
    out = []
    for i in range(calls):
        a = args(i) if callable(args) else args
        t = time.perf_counter()
        r = await client.call_tool(tool, a)
        out.append((time.perf_counter() - t) * 1000)
        assert not r.is_error, r.content
    return out


def row(transport: str, what: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
    print(f"| {transport} | {what} | {len(ms)} | {statistics.median(ms):.1f} | {p95:.1f} |", flush=True)


async def bench(client: Client, transport: str, ns: str, calls: int) -> None:
    await client.call_tool("workload_deploy", {"name": "bench", "namespace": ns, "image": "demo/busybox:latest"})
    row(transport, "workload_get", await timed(client, calls, "workload_get", {"name": "bench", "namespace": ns}))
    row(transport, "workload_list (namespace)", await timed(client, calls, "workload_list", {"namespace": ns}))
    row(transport, "workload_scale", await timed(
        client, calls, "workload_scale", lambda i: {"name": "bench", "namespace": ns, "replicas": i % 3}))
    row(transport, "workload_deploy (update)", await timed(
        client, calls, "workload_deploy",
        lambda i: {"name": "bench", "namespace": ns, "image": "demo/busybox:latest", "args": [str(i)]}))
    row(transport, "cluster_nodes", await timed(client, calls, "cluster_nodes", {}))


async def main() -> None:
    univrs, kubeconfig, ns, url, token_file, ca, calls = sys.argv[1:8]
    calls = int(calls)
    print("| transport | call | calls | median ms | p95 ms |")
    print("|---|---|---|---|---|")
    params = StdioServerParameters(command=univrs, args=["mcp", "--kubeconfig", kubeconfig], env={"RUST_LOG": "warn"})
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            starts.append((time.perf_counter() - t) * 1000)
    row("stdio", "spawn + connect + tools/list", starts)
    async with Client(params) as client:
        await bench(client, "stdio", ns, calls)

    token = open(token_file).read().strip()
    http = httpx2.AsyncClient(verify=ssl.create_default_context(cafile=ca),
                              headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=300))
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        await bench(client, "https", ns, calls)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
