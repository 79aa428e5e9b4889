"""Drives `univrs mcp` over stdio with the official MCP Python SDK, as an agent would.

Usage: mcp_stdio.py UNIVRS_BIN KUBECONFIG NAMESPACE IDENTITY NODE_A NODE_B

Lists the tools and checks their schemas; deploys, updates, scales, reads, lists and deletes
workloads; gets useful errors for bad arguments; cordons, uncordons and drains nodes; reads
credit, reputation and the cluster summary; vouches for a node. Prints one `ok …` line per
check and exits non-zero on the first failure. The caller checks the API server afterwards.
"""
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters

EXPECTED_TOOLS = {
    "workload_deploy", "workload_list", "workload_get", "workload_scale", "workload_delete",
    "workload_logs", "cluster_nodes", "node_cordon", "node_uncordon", "node_drain",
    "credit_balances", "credit_lines", "reputation", "vouch_create",
}


def ok(what: str) -> None:
    print("ok", what, flush=True)


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def call(client: Client, tool: str, args: dict) -> dict:
    """A tool call that must succeed; returns its structured content."""
    r = await client.call_tool(tool, args)
    assert not r.is_error, f"{tool} {args} failed: {text(r)}"
    assert isinstance(r.structured_content, dict), f"{tool}: no structured content: {r}"
    return r.structured_content


async def fails(client: Client, tool: str, args: dict, *expected: str) -> str:
    """A tool call that must fail as a tool error whose text contains every `expected`."""
    r = await client.call_tool(tool, args)
    msg = text(r)
    assert r.is_error, f"{tool} {args} should have failed, got {r.structured_content}"
    for e in expected:
        assert e in msg, f"{tool} {args}: expected {e!r} in the error, got {msg!r}"
    return msg


async def main() -> None:
    univrs, kubeconfig, ns, identity, node_a, node_b = sys.argv[1:7]
    params = StdioServerParameters(
        command=univrs,
        args=["mcp", "--stdio", "--kubeconfig", kubeconfig, "--identity", identity],
        env={"RUST_LOG": "warn"},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        print("protocol", client.protocol_version, "server", client.server_info, flush=True)

        tools = {t.name: t for t in (await client.list_tools()).tools}
        missing = EXPECTED_TOOLS - tools.keys()
        assert not missing, f"missing tools: {missing}"
        for t in tools.values():
            assert t.description and len(t.description) > 20, f"{t.name}: no useful description"
            assert t.input_schema.get("type") == "object", f"{t.name}: {t.input_schema}"
        deploy = tools["workload_deploy"].input_schema
        assert deploy.get("required") == ["name"], deploy.get("required")
        for field in ["namespace", "replicas", "image", "containers", "labels", "command", "args",
                      "env", "ports", "resources", "nodeSelector", "minReputation"]:
            assert field in deploy["properties"], f"workload_deploy lacks {field}"
        schema_text = json.dumps(deploy)
        assert "hostPort" in schema_text and "containerPort" in schema_text, schema_text
        assert set(tools["workload_scale"].input_schema["required"]) == {"name", "replicas"}
        assert tools["workload_list"].annotations.read_only_hint is True
        assert tools["workload_delete"].annotations.destructive_hint is True
        ok(f"{len(tools)} tools with object schemas; workload_deploy requires a name")

        spec = {
            "name": "mcp-web", "namespace": ns, "image": "registry.example:5000/demo/busybox:1.36",
            "replicas": 2, "command": ["httpd"], "args": ["-f", "-p", "8080"],
            "env": [{"name": "MODE", "value": "fast"}],
            "ports": [{"containerPort": 8080, "hostPort": 30080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "nodeSelector": {"site": "library"}, "minReputation": 0.2,
        }
        r = await call(client, "workload_deploy", spec)
        assert r["result"] == "created", r
        assert r["workload"]["replicas"] == 2, r
        ok("deployed mcp-web")
        r = await call(client, "workload_deploy", {**spec, "env": [{"name": "MODE", "value": "slow"}]})
        assert r["result"] == "updated", r
        ok("redeployed mcp-web (update)")

        # The call the seed document shows: a container list and labels.
        seed = {
            "name": "mcp-seed", "namespace": ns,
            "containers": [{"name": "web", "image": "community/portal:latest",
                            "ports": [{"containerPort": 80, "hostPort": 8080}],
                            "resources": {"cpu": "500m", "memory": "256Mi"}}],
            "replicas": 3, "labels": {"app": "portal", "tier": "frontend"},
        }
        r = await call(client, "workload_deploy", seed)
        assert r["result"] == "created" and r["workload"]["replicas"] == 3, r
        assert r["workload"]["labels"] == {"app": "portal", "tier": "frontend"}, r
        r = await call(client, "workload_get", {"name": "mcp-seed", "namespace": ns})
        c = r["spec"]["containers"][0]
        assert c["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}, c
        await fails(client, "workload_deploy",
                    {**seed, "containers": [{"name": "web", "image": "x", "imagee": "y"}]},
                    "containers[0]", "unknown field")
        await call(client, "workload_delete", {"name": "mcp-seed", "namespace": ns})
        ok("deployed the seed document's call (containers, labels) and refused a typo in a container")

        r = await call(client, "workload_scale", {"name": "mcp-web", "namespace": ns, "replicas": 3})
        assert r["previousReplicas"] == 2 and r["replicas"] == 3, r
        ok("scaled mcp-web 2 -> 3")

        # An update that leaves replicas out keeps the scaled count.
        r = await call(client, "workload_deploy", {k: v for k, v in spec.items() if k != "replicas"})
        assert r["result"] == "updated" and r["workload"]["replicas"] == 3, r
        ok("an update without replicas keeps 3")

        r = await call(client, "workload_get", {"name": "mcp-web", "namespace": ns})
        assert r["spec"]["replicas"] == 3, r["spec"]
        c = r["spec"]["containers"][0]
        assert c["name"] == "main" and c["image"] == spec["image"], c
        assert c["ports"][0]["hostPort"] == 30080 and c["env"] == [{"name": "MODE", "value": "fast"}], c
        assert r["spec"]["nodeSelector"] == {"site": "library"} and r["spec"]["minReputation"] == 0.2
        assert isinstance(r["conditions"], list) and isinstance(r["instances"], list), r
        assert isinstance(r["events"], list), r
        assert r["workload"]["readyReplicas"] == 0, r["workload"]
        ok(f"workload_get: spec, {len(r['conditions'])} conditions, {len(r['instances'])} instances, {len(r['events'])} events")

        r = await call(client, "workload_get", {"name": "placed", "namespace": ns})
        assert [i["node"] for i in r["instances"]] == [node_b], r["instances"]
        e = r["events"][0]
        assert e["type"] == "Warning" and e["reason"] == "FailedScheduling" and "0/2 nodes" in e["message"], r["events"]
        ok("workload_get shows an instance's node and the controller's Events")

        # workload_logs goes to the node that runs the instance (tests/browser.rs reads real
        # logs that way through the dashboard); these nodes are objects with no agent.
        await fails(client, "workload_logs", {"name": "placed", "namespace": ns},
                    f"node {node_b} publishes no node server")
        await fails(client, "workload_logs", {"name": "placed", "namespace": ns, "instance": 7},
                    "has no instance placed-7", "workload_get lists")
        await fails(client, "workload_logs", {"name": "placed", "namespace": ns, "tailLines": 0},
                    "tailLines is 0; give 1 to 1000")
        ok("workload_logs finds the instance's node, and says what is missing")

        r = await call(client, "workload_list", {"namespace": ns})
        assert "mcp-web" in [w["name"] for w in r["workloads"]], r
        r = await call(client, "workload_list", {})
        assert any(w["name"] == "mcp-web" and w["namespace"] == ns for w in r["workloads"]), r
        ok("workload_list (namespace and all)")

        # Bad arguments get errors that say what to fix.
        await fails(client, "workload_scale", {"name": "mcp-web", "namespace": ns, "replicas": -1},
                    "replicas must be ≥ 0 (got -1)")
        await fails(client, "workload_deploy", {"name": "mcp-web", "namespace": ns, "replicas": -3, "image": "x"},
                    "replicas must be ≥ 0")
        await fails(client, "workload_deploy", {"name": "no-image", "namespace": ns}, "image or containers is required")
        await fails(client, "workload_get", {"name": "nope", "namespace": ns},
                    f"workload {ns}/nope not found; workload_list shows what exists")
        await fails(client, "workload_scale", {"name": "nope", "namespace": ns, "replicas": 1},
                    f"workload {ns}/nope not found")
        await fails(client, "workload_deploy", {"name": "x", "image": "x", "replica": 2}, "unknown field `replica`")
        msg = await fails(client, "workload_deploy",
                          {"name": "bad-port", "namespace": ns, "image": "x", "ports": [{"containerPort": 70000}]},
                          "the API server refused", "spec.containers[0].ports[0].containerPort")
        print("  API server's message:", msg, flush=True)
        await fails(client, "workload_deploy", {"name": "x", "namespace": "no-such-ns", "image": "x"},
                    "namespace no-such-ns not found")
        ok("bad arguments: negative replicas, missing image, unknown workload, typo, API validation")

        await call(client, "workload_deploy", {"name": "mcp-gone", "namespace": ns, "image": "x"})
        r = await call(client, "workload_delete", {"name": "mcp-gone", "namespace": ns})
        assert r["result"] == "deleted", r
        await fails(client, "workload_delete", {"name": "mcp-gone", "namespace": ns}, "not found")
        ok("deleted mcp-gone")

        r = await call(client, "cluster_nodes", {})
        names = {n["name"]: n for n in r["nodes"]}
        assert node_a in names and node_b in names, names.keys()
        assert names[node_a]["capacity"]["cpu"] == "4" and names[node_a]["cordoned"] is False
        ok("cluster_nodes")
        r = await call(client, "node_cordon", {"name": node_a})
        assert r["cordoned"] is True, r
        r = await call(client, "cluster_nodes", {})
        assert [n for n in r["nodes"] if n["name"] == node_a][0]["cordoned"] is True
        await call(client, "node_uncordon", {"name": node_a})
        r = await call(client, "node_drain", {"name": node_b})
        assert r["draining"] is True and r["instancesToMove"] == [f"{ns}/placed-0"], r
        await fails(client, "node_drain", {"name": "ghost"}, "node ghost not found; cluster_nodes lists the nodes")
        ok("cordon, uncordon, drain")

        r = await call(client, "credit_lines", {"account": f"namespace/{ns}"})
        assert [l["name"] for l in r["creditLines"]] == [f"{node_a}-{ns}"], r
        assert r["creditLines"][0]["balance"] == 1500, r
        await fails(client, "credit_lines", {"account": "bank/x"}, "invalid account")
        r = await call(client, "credit_balances", {})
        balances = {b["account"]: b["balance"] for b in r["balances"]}
        assert balances[f"node/{node_a}"] == 1500 and balances[f"namespace/{ns}"] == -1500, balances
        assert r["sum"] == 0, r
        ok("credit_lines and credit_balances (sum 0)")

        r = await call(client, "vouch_create", {"subject": node_b, "weight": 0.6, "reason": "ran my jobs",
                                                "expiresIn": "48h"})
        vouch = r["vouch"]
        assert r["subjectNode"] == node_b and r["weight"] == 0.6, r
        await fails(client, "vouch_create", {"subject": node_b, "weight": 1.5}, "weight must be between 0 and 1")
        await fails(client, "vouch_create", {"subject": "ghost", "weight": 0.5}, "node ghost not found")
        r = await call(client, "reputation", {"node": node_b})
        received = r["nodes"][0]["vouchesReceived"]
        assert [v["name"] for v in received] == [vouch], received
        ok(f"vouch_create {vouch} and reputation shows it")
        print("vouch", vouch, flush=True)

        resources = (await client.list_resources()).resources
        assert [str(x.uri) for x in resources] == ["univrs://cluster/summary"], resources
        read = await client.read_resource("univrs://cluster/summary")
        summary = json.loads(read.contents[0].text)
        assert summary["workloads"]["total"] >= 1 and summary["nodes"]["total"] >= 2, summary
        assert summary["nodes"]["draining"] >= 1 and summary["credit"]["sumOfBalances"] == 0, summary
        ok("resource univrs://cluster/summary")

    # Clients that still use the initialize handshake (2025-11-25 and before) work too.
    async with Client(params, mode="legacy", read_timeout_seconds=60) as legacy:
        assert legacy.protocol_version == "2025-11-25", legacy.protocol_version
        assert EXPECTED_TOOLS <= {t.name for t in (await legacy.list_tools()).tools}
        r = await call(legacy, "workload_get", {"name": "mcp-web", "namespace": ns})
        assert r["spec"]["replicas"] == 3, r
        ok(f"a handshake-era client ({legacy.protocol_version}) lists tools and reads mcp-web")
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
