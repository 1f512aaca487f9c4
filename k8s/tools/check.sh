#!/usr/bin/env bash
# `make k8s-check`: lint and validate the Helm chart and the Dockerfile, offline.
#
#   1. helm lint --strict, with the default values, every k8s/examples/*.yaml, and
#      the overlays (values-mtls, values-platform) on top of values-production
#   2. helm template with the same value sets
#   3. every rendered object validated by kubernetes-validate (strict) for each
#      Kubernetes version of K8S_KUBE_VERSIONS; the custom resources (KafkaTopic,
#      ServiceMonitor, PrometheusRule, Certificate, ScaledObject, GRPCRoute) against
#      the schemas in k8s/tools/crd-schemas/; the alerts' expressions as PromQL
#   4. hadolint Dockerfile
#
# Quiet on success apart from a short summary; any problem prints its output and
# exits non-zero. The tools come from k8s/tools/install-tools.sh (`make k8s-tools`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${K8S_TOOLS_DIR:-$root/.tools/k8s}"
chart="${K8S_CHART:-$root/k8s/ordermesh}"
read -r -a versions <<<"${K8S_KUBE_VERSIONS:-1.29.0 1.33.0}"

helm="$tools/bin/helm"
if [[ ! -x "$helm" ]]; then
    echo "k8s-check: $helm is missing: run \`make k8s-tools\`" >&2
    exit 1
fi
# Keep helm's cache/config out of the user's home.
export HELM_CACHE_HOME="$tools/helm/cache" HELM_CONFIG_HOME="$tools/helm/config" \
    HELM_DATA_HOME="$tools/helm/data"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# run LABEL CMD...: run quietly, show the output only when it fails.
run() {
    local label="$1"
    shift
    if ! "$@" >"$out/log" 2>&1; then
        echo "k8s-check: FAILED: $label" >&2
        cat "$out/log" >&2
        exit 1
    fi
}

value_sets=(default)
for f in "$root"/k8s/examples/*.yaml; do
    [[ -e "$f" ]] && value_sets+=("$f")
done
# The overlays as they are meant to be used: on top of the production values.
examples="$root/k8s/examples"
for overlay in values-mtls values-platform; do
    [[ -e "$examples/$overlay.yaml" ]] &&
        value_sets+=("$examples/values-production.yaml+$examples/$overlay.yaml")
done

rendered=()
for set in "${value_sets[@]}"; do
    name=default
    args=()
    if [[ "$set" != default ]]; then
        IFS=+ read -r -a files <<<"$set"
        name=""
        for f in "${files[@]}"; do
            name+="${name:++}$(basename "$f" .yaml)"
            args+=(--values "$f")
        done
    fi
    run "helm lint ($name)" "$helm" lint --strict "$chart" "${args[@]}"
    run "helm template ($name)" "$helm" template ordermesh "$chart" --namespace ordermesh \
        --kube-version "${versions[0]}" "${args[@]}"
    cp "$out/log" "$out/$name.yaml"
    rendered+=("$out/$name.yaml")
done
names=()
for set in "${value_sets[@]}"; do names+=("$(basename "${set//+*\//+}")"); done
echo "k8s-check: helm lint --strict and helm template ok for: ${names[*]}"

k_args=()
for v in "${versions[@]}"; do k_args+=(-k "$v"); done
if ! "$tools/venv/bin/python" "$here/validate_manifests.py" "${k_args[@]}" "${rendered[@]}" >"$out/log" 2>&1; then
    echo "k8s-check: FAILED: manifest validation" >&2
    cat "$out/log" >&2
    exit 1
fi
sed 's/^/k8s-check: /' "$out/log"

run "hadolint Dockerfile" "$tools/bin/hadolint" "$root/Dockerfile"
echo "k8s-check: hadolint Dockerfile ok"
