#!/usr/bin/env bash
# `make k8s-crd-crosscheck`: the custom resources the chart renders, validated with the
# validators that the npm packages @kubernetes-models/* generate from the upstream CRDs
# (KEDA, the Prometheus Operator, the Gateway API, cert-manager).
#
# `make k8s-check` validates the same objects offline against the hand-kept subsets in
# k8s/tools/crd-schemas/. This script is how those subsets are checked against the real
# CRDs when one of them (or a template) changes; it needs node and npm and downloads the
# pinned packages into a temporary folder, so it is not part of `make k8s-check`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${K8S_TOOLS_DIR:-$root/.tools/k8s}"
helm="$tools/bin/helm"
examples="$root/k8s/examples"
export HELM_CACHE_HOME="$tools/helm/cache" HELM_CONFIG_HOME="$tools/helm/config" \
    HELM_DATA_HOME="$tools/helm/data"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "k8s-crd-crosscheck: $tool is needed" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    npm init -y >/dev/null
    npm install --silent --no-audit --no-fund \
        @kubernetes-models/keda@2.0.0 \
        @kubernetes-models/prometheus-operator@6.0.0 \
        @kubernetes-models/gateway-api@2.0.0 \
        @kubernetes-models/cert-manager@6.0.0 \
        js-yaml@4.1.0
)

# Every custom resource the chart can render: the overlays on the production values.
for overlay in values-platform values-mtls; do
    "$helm" template ordermesh "$root/k8s/ordermesh" --namespace ordermesh \
        -f "$examples/values-production.yaml" -f "$examples/$overlay.yaml"
    echo "---"
done >"$work/rendered.yaml"

cat >"$work/check.mjs" <<'JS'
import fs from "fs";
import * as yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { GRPCRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/GRPCRoute";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";

const models = { ScaledObject, PrometheusRule, ServiceMonitor, GRPCRoute, Certificate };
const seen = new Set();
let failed = 0;
for (const doc of yaml.loadAll(fs.readFileSync(process.argv[2], "utf8"))) {
  if (!doc || !models[doc.kind]) continue;
  seen.add(doc.kind);
  try {
    new models[doc.kind](doc).validate();
  } catch (err) {
    failed++;
    console.error(`FAILED ${doc.kind}/${doc.metadata.name}: ${err.message}`);
  }
}
for (const kind of Object.keys(models)) {
  if (!seen.has(kind)) { failed++; console.error(`FAILED: no ${kind} rendered`); }
}
if (failed) process.exit(1);
console.log(`k8s-crd-crosscheck: ${[...seen].sort().join(", ")} valid against the upstream CRDs`);
JS
(cd "$work" && node check.mjs rendered.yaml)
