{{/*
The pod template of a Job the chart runs (the migration Jobs, the risk retraining
CronJob): one container of the image, with a service's database URL, its logging
and OpenTelemetry settings, the hardened security contexts and /tmp as the only
writable path. Pod settings come from the Job's own values block ("job":
podLabels, podAnnotations, resources, priorityClassName, nodeSelector, affinity,
tolerations), scheduling values falling back to the service's.
Usage: include "ordermesh.jobPod" (dict "root" $ "name" "payment" "cfg" $cfg "job" $values
  "component" "migrate-payment" "kind" "job" "workload" $jobName "serviceAccountName" $account
  "container" "migrate" "image" $image "pullPolicy" "IfNotPresent" "args" (list ...)
  "db" $db ["command" (list ...)] ["volumes" (list ...)] ["volumeMounts" (list ...)]
  ["env" (dict "NAME" "value" ...)])
*/}}
{{- define "ordermesh.jobPod" -}}
{{- $ := .root }}
{{- $j := .job }}
{{- $cfg := .cfg }}
{{- $env := dict "ORDERMESH_LOG_LEVEL" $cfg.logLevel }}
{{- $env = mustMergeOverwrite $env (include "ordermesh.otelEnv" (dict "root" $ "name" .name "kind" .kind "workload" .workload) | fromJson) }}
{{- $env = mustMergeOverwrite $env (.env | default dict) }}
metadata:
  labels:
    {{- include "ordermesh.objectLabels" (dict "root" $ "component" .component "extra" $j.podLabels) | nindent 4 }}
  {{- with $j.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  {{- with ($j.priorityClassName | default $cfg.priorityClassName) }}
  priorityClassName: {{ . }}
  {{- end }}
  serviceAccountName: {{ .serviceAccountName }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "ordermesh.securityContext" (dict "value" $cfg.podSecurityContext "indent" 2) }}
  containers:
    - name: {{ .container }}
      image: {{ .image | quote }}
      imagePullPolicy: {{ .pullPolicy }}
      {{- with .command }}
      command: {{ toJson . }}
      {{- end }}
      args: {{ include "ordermesh.jobArgs" .args }}
      env:
        {{- include "ordermesh.podEnv" $ | nindent 8 }}
        - name: ORDERMESH_DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ .db.name }}
              key: {{ .db.key }}
        {{- include "ordermesh.envFromDict" $env | trim | nindent 8 }}
      resources:
        {{- toYaml $j.resources | nindent 8 }}
      {{- include "ordermesh.securityContext" (dict "value" $cfg.containerSecurityContext "indent" 6) }}
      volumeMounts:
        {{- include "ordermesh.tmpVolumeMount" $ | nindent 8 }}
        {{- with .volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "ordermesh.tmpVolume" $ | nindent 4 }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* The Job's own scheduling values, or else its service's. */}}
  {{- with ($j.nodeSelector | default $cfg.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($j.affinity | default $cfg.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($j.tolerations | default $cfg.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A container's args on one line, each quoted: ["migrate", "order"]. */}}
{{- define "ordermesh.jobArgs" -}}
{{- $quoted := list }}
{{- range . }}
{{- $quoted = append $quoted (quote .) }}
{{- end }}
{{- printf "[%s]" (join ", " $quoted) }}
{{- end }}

{{/*
The training image's block: riskRetraining.image, whose empty keys default to
payment's image with "-training" after its tag (the image built with
--build-arg EXTRAS=training, docs/deploy.md). A digest is the training image's own:
payment's digest names another image. Usage:
include "ordermesh.trainingImage" (dict "root" $ "cfg" $paymentCfg) | fromJson
*/}}
{{- define "ordermesh.trainingImage" -}}
{{- $own := .root.Values.riskRetraining.image }}
{{- $tag := printf "%s-training" (.cfg.image.tag | default .root.Chart.AppVersion) }}
{{- dict
  "repository" ($own.repository | default .cfg.image.repository)
  "tag" ($own.tag | default $tag)
  "digest" ($own.digest | default "") | toJson }}
{{- end }}
