"""Drives `univrs mcp --listen` over streamable HTTP with TLS and a bearer token, using the
official MCP Python SDK.

Usage: mcp_http.py URL TOKEN_FILE CA_CERT NAMESPACE [HOST=ADDRESS]

HOST=ADDRESS makes HOST resolve to ADDRESS, as cluster DNS resolves a Service's name to its
ClusterIP for clients inside the cluster (the chart's certificate names the Service).

Checks that TLS is on with the given certificate, that requests without the token or with a
wrong one get 401, and that a client with the token lists tools and deploys a workload.
Prints one `ok …` line per check and exits non-zero on the first failure.
"""
import asyncio
import socket
import ssl
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "probe", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def ok(what: str) -> None:
    print("ok", what, flush=True)


def resolve(host: str, address: str) -> None:
    """Resolves `host` to `address` in this process (every other name as before)."""
    real = socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):
        # anyio passes the name IDNA-encoded, as bytes.
        return real(address if name in (host, host.encode("idna")) else name, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


async def main() -> None:
    url, token_file, ca, ns = sys.argv[1:5]
    for pair in sys.argv[5:]:
        resolve(*pair.split("=", 1))
    token = open(token_file).read().strip()
    tls = ssl.create_default_context(cafile=ca)

    # TLS is on: without trusting the server's certificate the handshake fails.
    async with httpx2.AsyncClient() as untrusting:
        try:
            await untrusting.post(url, json=INITIALIZE, headers=HEADERS)
            raise AssertionError("a client that does not trust the certificate got an answer")
        except httpx2.ConnectError as e:
            assert "CERTIFICATE_VERIFY_FAILED" in str(e), e
    ok("TLS: an untrusted certificate is refused by the client")

    async with httpx2.AsyncClient(verify=tls) as http:
        r = await http.post(url, json=INITIALIZE, headers=HEADERS)
        assert r.status_code == 401, (r.status_code, r.text)
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
        # The unread request body makes the server close; it says so, so no client reuses it.
        assert r.headers.get("connection") == "close", r.headers
        ok("no token: 401 with WWW-Authenticate: Bearer")
        r = await http.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Bearer " + "0" * 64})
        assert r.status_code == 401, (r.status_code, r.text)
        r = await http.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Basic " + token})
        assert r.status_code == 401, (r.status_code, r.text)
        ok("wrong token or scheme: 401")
        r = await http.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Bearer " + token})
        assert r.status_code == 200, (r.status_code, r.text)
        ok("right token: 200")
        r = await http.get(url.rsplit("/mcp", 1)[0] + "/healthz")
        assert r.status_code == 200 and r.text == "ok", (r.status_code, r.text)
        ok("/healthz answers ok without the token (a kubelet's probes)")

    # A client that connects and never starts its TLS handshake holds up no one else.
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    _, idle = await asyncio.open_connection(host, int(port))

    http = httpx2.AsyncClient(
        verify=tls,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30, read=300),
    )
    async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as client:
        print("protocol", client.protocol_version, flush=True)
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"workload_deploy", "workload_get", "cluster_nodes"} <= names, names
        r = await client.call_tool("workload_deploy", {"name": "http-web", "namespace": ns, "image": "demo/busybox:latest",
                                                       "replicas": 2})
        assert not r.is_error, r
        assert r.structured_content["result"] == "created", r.structured_content
        r = await client.call_tool("workload_get", {"name": "http-web", "namespace": ns})
        assert not r.is_error and r.structured_content["spec"]["replicas"] == 2, r
        r = await client.call_tool("workload_scale", {"name": "http-web", "namespace": ns, "replicas": -1})
        assert r.is_error and "replicas must be ≥ 0" in r.content[0].text, r
        ok(f"with the token: {len(names)} tools, deployed http-web (while another connection sat idle)")
    idle.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
