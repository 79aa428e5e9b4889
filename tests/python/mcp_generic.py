"""Drives the generic `kubernetes-mcp-server` (npm) over stdio with the official MCP Python SDK:
an agent that knows only Kubernetes creates a Univrs Workload and reads it back.

Usage: mcp_generic.py KUBERNETES_MCP_SERVER KUBECONFIG NAMESPACE

Prints one `ok …` line per check and exits non-zero on the first failure; the caller checks
the Workload in the API server.
"""
import asyncio
import sys

from mcp import Client, StdioServerParameters

MANIFEST = """apiVersion: univrs.io/v1alpha1
kind: Workload
metadata:
  name: generic-web
  namespace: {ns}
spec:
  replicas: 2
  containers:
  - name: web
    image: demo/busybox:latest
    ports:
    - containerPort: 8080
      hostPort: 30081
"""


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main() -> None:
    server, kubeconfig, ns = sys.argv[1:4]
    params = StdioServerParameters(command=server, args=["--kubeconfig", kubeconfig, "--disable-multi-cluster"])
    async with Client(params, read_timeout_seconds=60) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "resources_create_or_update" in names, names
        r = await client.call_tool("resources_create_or_update", {"resource": MANIFEST.format(ns=ns)})
        assert not r.is_error, text(r)
        print("ok resources_create_or_update:", text(r)[:200].replace("\n", " "), flush=True)
        r = await client.call_tool("resources_get", {"apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
                                                     "namespace": ns, "name": "generic-web"})
        assert not r.is_error and "generic-web" in text(r), text(r)
        print("ok resources_get finds generic-web", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
