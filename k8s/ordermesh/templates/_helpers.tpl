{{/*
Helpers of the ordermesh chart. Numbers read from values are float64 in Helm:
they are printed through int/int64/toString/toYaml, never bare, so that a large
number never comes out as 4.194304e+06.
*/}}

{{- define "ordermesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ordermesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ordermesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The four services, in the order they are rendered. */}}
{{- define "ordermesh.serviceNames" -}}
order inventory payment notification
{{- end }}

{{/* The services other services call over gRPC (order-service calls them): each gets a headless Service. */}}
{{- define "ordermesh.calledServiceNames" -}}
inventory payment
{{- end }}

{{/* The full gRPC service name each service answers health for. Usage: include "ordermesh.grpcServiceName" "order" */}}
{{- define "ordermesh.grpcServiceName" -}}
{{- $names := dict
  "order" "ordermesh.order.v1.OrderService"
  "inventory" "ordermesh.inventory.v1.InventoryService"
  "payment" "ordermesh.payment.v1.PaymentService"
  "notification" "ordermesh.notification.v1.NotificationService" }}
{{- required (printf "unknown service %q" .) (get $names .) }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "ordermesh.labels" -}}
helm.sh/chart: {{ include "ordermesh.chart" . }}
{{ include "ordermesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ordermesh
{{- end }}

{{/*
The labels of an object (or with "pod" true, of a Deployment's pods), as one map:
commonLabels, then the object's own ("extra"), then the chart's, which win so that
no value can break a selector. Each key appears once.
Usage: include "ordermesh.objectLabels" (dict "root" $ "component" "order" "extra" $cfg.podLabels) | nindent 4
*/}}
{{- define "ordermesh.objectLabels" -}}
{{- $chart := include (ternary "ordermesh.podLabels" "ordermesh.labels" (default false .pod)) .root | fromYaml }}
{{- with .component }}
{{- $_ := set $chart "app.kubernetes.io/component" . }}
{{- end }}
{{- $all := deepCopy (.root.Values.commonLabels | default dict) }}
{{- $all = mustMergeOverwrite $all (deepCopy (.extra | default dict)) }}
{{- mustMergeOverwrite $all $chart | toYaml }}
{{- end }}

{{/*
The annotations of an object's metadata, on their own lines at the metadata's indent:
commonAnnotations and the object's own (which win), or nothing when both are empty.
Usage: {{- include "ordermesh.metadataAnnotations" (dict "root" $ "extra" (dict "k" "v")) }}
*/}}
{{- define "ordermesh.metadataAnnotations" -}}
{{- $all := mustMergeOverwrite (deepCopy (.root.Values.commonAnnotations | default dict)) (deepCopy (.extra | default dict)) }}
{{- with $all }}
{{- dict "annotations" . | toYaml | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Labels of a Deployment's pods: no chart version, so that a chart upgrade that
changes nothing in a pod does not restart it.
*/}}
{{- define "ordermesh.podLabels" -}}
{{ include "ordermesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ordermesh
{{- end }}

{{/* Labels every pod of the release carries: the default-deny NetworkPolicy selects them. */}}
{{- define "ordermesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ordermesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of one component's pods. Usage: include "ordermesh.componentSelectorLabels" (dict "root" $ "component" "order") */}}
{{- define "ordermesh.componentSelectorLabels" -}}
{{ include "ordermesh.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of a per-service object: <fullname>-<service>. Usage: include "ordermesh.componentName" (dict "root" $ "component" "order") */}}
{{- define "ordermesh.componentName" -}}
{{- printf "%s-%s" (include "ordermesh.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The settings of one service: `defaults` deep-merged with `services.<name>`.
Usage: $cfg := include "ordermesh.serviceConfig" (dict "root" $ "name" "order") | fromJson
*/}}
{{- define "ordermesh.serviceConfig" -}}
{{- $own := index .root.Values.services .name | default dict }}
{{- mustMergeOverwrite (deepCopy .root.Values.defaults) (deepCopy $own) | toJson }}
{{- end }}

{{- define "ordermesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ordermesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference from an image block. Usage: include "ordermesh.image" (dict "root" $ "image" $cfg.image) */}}
{{- define "ordermesh.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* In-cluster gRPC address of a service. Usage: include "ordermesh.grpcAddress" (dict "root" $ "component" "inventory") */}}
{{- define "ordermesh.grpcAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "ordermesh.componentName" .) .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.ports.grpc) }}
{{- end }}

{{/* Name of a service's headless Service: <fullname>-<service>-headless. Usage: include "ordermesh.headlessName" (dict "root" $ "component" "inventory") */}}
{{- define "ordermesh.headlessName" -}}
{{- printf "%s-headless" (include "ordermesh.componentName" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
The gRPC target order-service dials for a called service: every ready pod, through
the headless Service's DNS name. Usage: include "ordermesh.grpcTarget" (dict "root" $ "component" "inventory")
*/}}
{{- define "ordermesh.grpcTarget" -}}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "ordermesh.headlessName" .) .root.Release.Namespace .root.Values.clusterDomain (int .root.Values.ports.grpc) }}
{{- end }}

{{/*
Where a service's database URL comes from, as {"name": secret, "key": key}.
For the migration Job (hook: true) a plain URL comes from the hook's own Secret,
because the release's Secrets do not exist yet at pre-install.
Usage: include "ordermesh.databaseSecretRef" (dict "root" $ "name" "order" "cfg" $cfg "hook" false) | fromJson
*/}}
{{- define "ordermesh.databaseSecretRef" -}}
{{- $db := .cfg.database }}
{{- if $db.url }}
{{- if .hook }}
{{- dict "name" (include "ordermesh.componentName" (dict "root" .root "component" "migrate")) "key" (printf "%s-database-url" .name) | toJson }}
{{- else }}
{{- dict "name" (include "ordermesh.componentName" (dict "root" .root "component" .name)) "key" "database-url" | toJson }}
{{- end }}
{{- else if $db.existingSecret }}
{{- dict "name" $db.existingSecret "key" $db.existingSecretKey | toJson }}
{{- else }}
{{- fail (printf "services.%s.database: set url or existingSecret" .name) }}
{{- end }}
{{- end }}

{{/* Downward-API variables the OpenTelemetry resource attributes refer to. */}}
{{- define "ordermesh.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}

{{/*
OpenTelemetry variables of one workload, as a name -> value dict (JSON).
Usage: include "ordermesh.otelEnv" (dict "root" $ "name" "order" "kind" "deployment" "workload" $name) | fromJson
*/}}
{{- define "ordermesh.otelEnv" -}}
{{- $t := .root.Values.telemetry }}
{{- $attrs := list
  "service.namespace=ordermesh"
  (printf "service.version=%s" .root.Chart.AppVersion)
  "k8s.namespace.name=$(POD_NAMESPACE)"
  "k8s.pod.name=$(POD_NAME)"
  "k8s.node.name=$(NODE_NAME)"
  (printf "k8s.%s.name=%s" .kind .workload) }}
{{- range $k, $v := $t.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- dict
  "OTEL_SERVICE_NAME" (printf "%s-service" .name)
  "OTEL_EXPORTER_OTLP_ENDPOINT" $t.otlpEndpoint
  "OTEL_EXPORTER_OTLP_PROTOCOL" $t.otlpProtocol
  "OTEL_TRACES_SAMPLER" $t.sampler
  "OTEL_TRACES_SAMPLER_ARG" (toString $t.samplerArg)
  "OTEL_RESOURCE_ATTRIBUTES" (join "," $attrs) | toJson }}
{{- end }}

{{/* Render a name -> value dict as EnvVar items, sorted by name. */}}
{{- define "ordermesh.envFromDict" -}}
{{- range $k := keys . | sortAlpha }}
- name: {{ $k }}
  value: {{ index $ $k | toString | quote }}
{{- end }}
{{- end }}

{{/*
A pod's or container's securityContext from values (defaults.podSecurityContext,
defaults.containerSecurityContext: the hardened defaults, uid 10001 being the image's
user). A key set to null is left out (OpenShift's restricted SCC assigns the uid);
the whole block set to null leaves the securityContext out.
Usage: {{- include "ordermesh.securityContext" (dict "value" $cfg.podSecurityContext "indent" 6) }}
*/}}
{{- define "ordermesh.securityContext" -}}
{{- with .value }}
{{- dict "securityContext" . | toYaml | nindent (int $.indent) }}
{{- end }}
{{- end }}

{{/* The only writable path: /tmp. */}}
{{- define "ordermesh.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "ordermesh.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Port list of a NetworkPolicy rule. Usage: include "ordermesh.tcpPorts" (list 5432) */}}
{{- define "ordermesh.tcpPorts" -}}
{{- range . }}
- protocol: TCP
  port: {{ int . }}
{{- end }}
{{- end }}

{{/* ipBlock peers from a CIDR list whose items are "a.b.c.d/n" or {cidr, except}. */}}
{{- define "ordermesh.cidrPeers" -}}
{{- range . }}
{{- if kindIs "string" . }}
- ipBlock:
    cidr: {{ . | quote }}
{{- else }}
- ipBlock:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Data of the chart-managed Secret of one service (empty when every secret value
comes from an existing Secret): its plain database URL, and for notification the
plain webhook secret. Usage: include "ordermesh.serviceSecretData" (dict "root" $ "name" "order" "cfg" $cfg)
*/}}
{{- define "ordermesh.serviceSecretData" -}}
{{- if .cfg.database.url }}
database-url: {{ .cfg.database.url | b64enc | quote }}
{{- end }}
{{- if and (eq .name "notification") .root.Values.notification.webhookSecret.value }}
webhook-secret: {{ .root.Values.notification.webhookSecret.value | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
One NetworkPolicy rule, or nothing when it has no peer: an empty peer list
would mean "everyone", which is never what an unset value should allow.
Usage: include "ordermesh.netpolRule" (dict "direction" "to" "peers" $peers "ports" (list 5432))
*/}}
{{- define "ordermesh.netpolRule" -}}
{{- if .peers -}}
- {{ .direction }}:
    {{- toYaml .peers | nindent 4 }}
  ports:
    {{- include "ordermesh.tcpPorts" .ports | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/* The TLS Secret of a service (tls.crt, tls.key, ca.crt). Usage: include "ordermesh.tlsSecretName" (dict "root" $ "name" "order") */}}
{{- define "ordermesh.tlsSecretName" -}}
{{- $given := index .root.Values.tls.secretNames .name | default "" }}
{{- $given | default (printf "%s-tls" (include "ordermesh.componentName" (dict "root" .root "component" .name))) }}
{{- end }}

{{/*
Checks of the security values, shared by every template that renders pods.
auth needs tls (service identities come from certificates, and tokens must not
cross the network in clear text) and the identity provider's keys.
*/}}
{{- define "ordermesh.checkSecurity" -}}
{{- if and .Values.auth.enabled (not .Values.tls.enabled) }}
{{- fail "auth.enabled needs tls.enabled: service identities come from client certificates, and tokens must not travel in clear text" }}
{{- end }}
{{- $sources := include "ordermesh.authKeySources" . | fromJsonArray }}
{{- if gt (len $sources) 1 }}
{{- fail (printf "set one source of token keys, not %d: %s (the services refuse to start with several)" (len $sources) (join ", " $sources)) }}
{{- end }}
{{- if and .Values.auth.enabled (not $sources) }}
{{- fail "auth.enabled needs a source of token keys: auth.oidcIssuer, auth.jwks.url or auth.jwks.configMap" }}
{{- end }}
{{- if and .Values.auth.enabled (include "ordermesh.authRemoteKeys" .) .Values.networkPolicy.enabled (not .Values.networkPolicy.identityProvider.to) }}
{{- fail "auth.oidcIssuer and auth.jwks.url need networkPolicy.identityProvider.to: the services fetch the token keys from the identity provider, which the NetworkPolicies must let them reach" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- end }}

{{/* Environment of the security settings of one service, as a name -> value dict (JSON). Usage: include "ordermesh.securityEnv" $ | fromJson */}}
{{- define "ordermesh.securityEnv" -}}
{{- $env := dict }}
{{- if .Values.tls.enabled }}
{{- $dir := .Values.tls.mountPath | trimSuffix "/" }}
{{- $_ := set $env "ORDERMESH_TLS_CERT_FILE" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $env "ORDERMESH_TLS_KEY_FILE" (printf "%s/tls.key" $dir) }}
{{- $_ := set $env "ORDERMESH_TLS_CA_FILE" (printf "%s/ca.crt" $dir) }}
{{- $_ := set $env "ORDERMESH_HEALTH_PORT" (int .Values.ports.health) }}
{{- end }}
{{- if .Values.auth.enabled }}
{{- $_ := set $env "ORDERMESH_AUTH_ENABLED" "true" }}
{{- $jwks := .Values.auth.jwks }}
{{- if .Values.auth.oidcIssuer }}
{{- $_ := set $env "ORDERMESH_AUTH_OIDC_ISSUER" .Values.auth.oidcIssuer }}
{{- end }}
{{- if $jwks.url }}
{{- $_ := set $env "ORDERMESH_AUTH_JWKS_URL" $jwks.url }}
{{- end }}
{{- if $jwks.configMap }}
{{- $_ := set $env "ORDERMESH_AUTH_JWKS_FILE" (printf "%s/%s" (include "ordermesh.authMountPath" .) $jwks.key) }}
{{- end }}
{{- if include "ordermesh.authRemoteKeys" . }}
{{- $_ := set $env "ORDERMESH_AUTH_JWKS_CACHE_S" (toString $jwks.cacheSeconds) }}
{{- $_ := set $env "ORDERMESH_AUTH_JWKS_MIN_REFRESH_INTERVAL_S" (toString $jwks.minRefreshIntervalSeconds) }}
{{- $_ := set $env "ORDERMESH_AUTH_JWKS_TIMEOUT_S" (toString $jwks.timeoutSeconds) }}
{{- end }}
{{- $_ := set $env "ORDERMESH_AUTH_JWT_AUDIENCE" .Values.auth.audience }}
{{- $_ := set $env "ORDERMESH_AUTH_JWT_ISSUER" .Values.auth.issuer }}
{{- end }}
{{- $env | toJson }}
{{- end }}

{{/* The auth values naming a source of token keys that are set, as a JSON list. */}}
{{- define "ordermesh.authKeySources" -}}
{{- $sources := list }}
{{- if .Values.auth.oidcIssuer }}{{ $sources = append $sources "auth.oidcIssuer" }}{{ end }}
{{- if .Values.auth.jwks.url }}{{ $sources = append $sources "auth.jwks.url" }}{{ end }}
{{- if .Values.auth.jwks.configMap }}{{ $sources = append $sources "auth.jwks.configMap" }}{{ end }}
{{- $sources | toJson }}
{{- end }}

{{/* "true" when authentication is on and fetches the token keys from a URL; else empty. */}}
{{- define "ordermesh.authRemoteKeys" -}}
{{- if and .Values.auth.enabled (or .Values.auth.oidcIssuer .Values.auth.jwks.url) }}true{{ end }}
{{- end }}

{{- define "ordermesh.authMountPath" -}}
/etc/ordermesh/auth
{{- end }}

{{/* The topics notification-service consumes (ordermesh_notification.handler). */}}
{{- define "ordermesh.notificationTopics" -}}
ordermesh.orders.v1 ordermesh.payments.v1
{{- end }}

{{/*
Values the chart removed or renamed, as path -> what to use instead. "serviceSettings"
keys are looked for in `defaults` and in every services.<name>; "values" holds full
paths (a.b.c). values.schema.json keeps accepting each removed key, so that this
check, not a bare "additional property" error, is what a user sees. Keep an entry for
as long as an upgrade from a release that had the key is supported.
*/}}
{{- define "ordermesh.removedValues" -}}
serviceSettings:
  extraEnvFromSecrets: >-
    extraEnvFrom (since chart 0.2.0), a list of EnvFromSource objects:
    [{secretRef: {name: <secret>}}, {configMapRef: {name: <configmap>}}]
values: {}
{{- end }}

{{- define "ordermesh.checkRemovedValues" -}}
{{- $removed := include "ordermesh.removedValues" . | fromYaml }}
{{- $paths := deepCopy ($removed.values | default dict) }}
{{- range $key, $use := $removed.serviceSettings }}
{{- $_ := set $paths (printf "defaults.%s" $key) $use }}
{{- range $name := splitList " " (include "ordermesh.serviceNames" $) }}
{{- $_ := set $paths (printf "services.%s.%s" $name $key) $use }}
{{- end }}
{{- end }}
{{- range $path := keys $paths | sortAlpha }}
{{- $node := $.Values }}
{{- $found := true }}
{{- range $key := splitList "." $path }}
{{- if and $found (kindIs "map" $node) (hasKey $node $key) }}
{{- $node = index $node $key }}
{{- else }}
{{- $found = false }}
{{- end }}
{{- end }}
{{- if $found }}
{{- fail (printf "%s was removed from the chart: use %s" $path (index $paths $path | trim)) }}
{{- end }}
{{- end }}
{{- end }}
