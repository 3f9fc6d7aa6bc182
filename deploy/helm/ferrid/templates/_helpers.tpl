{{/*
Object names are fixed (ferrid-server, ferrid-agent, ferrid-bundle): one release per
cluster, because every agent serves its node's /run/ferrid/sockets.
*/}}

{{/* Labels on every object; call with (dict "ctx" $ "component" "server"). */}}
{{- define "ferrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferrid.selectorLabels" . }}
app.kubernetes.io/part-of: ferrid
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* Selector labels (immutable once deployed). */}}
{{- define "ferrid.selectorLabels" -}}
app.kubernetes.io/name: ferrid
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferrid.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The server's address as agents dial it. */}}
{{- define "ferrid.serverHost" -}}
ferrid-server.{{ .Release.Namespace }}.svc
{{- end }}
