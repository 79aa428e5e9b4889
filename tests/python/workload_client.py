"""Creates, lists and watches a Univrs Workload with the official Python kubernetes client.

Usage: workload_client.py KUBECONFIG NAMESPACE. Prints one line per check; exits non-zero on failure.
"""
import sys
import threading

from kubernetes import client, config, watch

GROUP, VERSION, PLURAL = "univrs.io", "v1alpha1", "workloads"


def main() -> None:
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    try:
        core.create_namespace({"metadata": {"name": ns}})
    except client.exceptions.ApiException as e:
        if e.status != 409:
            raise
    api = client.CustomObjectsApi()

    seen = []
    started = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        started.set()
        for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, timeout_seconds=30):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if ("MODIFIED", "py-web") in seen:
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    started.wait()

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workload",
        "metadata": {"name": "py-web"},
        "spec": {"replicas": 1, "containers": [{"name": "web", "image": "demo/busybox:latest"}]},
    }
    created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    print("created", created["metadata"]["name"], "defaults restartPolicy", created["spec"]["restartPolicy"])
    listed = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    names = [i["metadata"]["name"] for i in listed["items"]]
    print("listed", names)
    assert "py-web" in names
    api.patch_namespaced_custom_object_scale(GROUP, VERSION, ns, PLURAL, "py-web", {"spec": {"replicas": 3}})
    t.join(timeout=30)
    print("watched", seen)
    assert ("ADDED", "py-web") in seen and ("MODIFIED", "py-web") in seen, seen
    got = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "py-web")
    assert got["spec"]["replicas"] == 3, got["spec"]
    print("ok")


if __name__ == "__main__":
    main()
