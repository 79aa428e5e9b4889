{{/* Names, labels and small shared pieces. */}}

{{/* The namespace of the Leases and of the revival pool's account: fixed in the binaries. */}}
{{- define "univrs.systemNamespace" -}}univrs-system{{- end -}}

{{- define "univrs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release name, or release-chart when the release name does not contain the chart's. */}}
{{- define "univrs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "univrs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "univrs.labels" -}}
helm.sh/chart: {{ include "univrs.chart" . }}
app.kubernetes.io/name: {{ include "univrs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: univrs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: (dict "ctx" $ "component" "controller"). */}}
{{- define "univrs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "univrs.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of a component's objects: (dict "ctx" $ "component" "controller"). */}}
{{- define "univrs.componentLabels" -}}
{{ include "univrs.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "univrs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* A component's ServiceAccount name: (dict "ctx" $ "component" "controller"). */}}
{{- define "univrs.serviceAccountName" -}}
{{- $values := index .ctx.Values .component -}}
{{- if $values.serviceAccount.create -}}
{{- default (printf "%s-%s" (include "univrs.fullname" .ctx) .component) $values.serviceAccount.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the MCP bearer token. */}}
{{- define "univrs.mcp.tokenSecret" -}}
{{- default (printf "%s-mcp-token" (include "univrs.fullname" .)) .Values.mcp.auth.existingSecret -}}
{{- end -}}

{{/* The Secret holding the MCP serving certificate. */}}
{{- define "univrs.mcp.tlsSecret" -}}
{{- default (printf "%s-mcp-tls" (include "univrs.fullname" .)) .Values.mcp.tls.existingSecret -}}
{{- end -}}

{{/* The Secret holding the agents' API token. */}}
{{- define "univrs.agent.tokenSecret" -}}
{{- default (printf "%s-agent-api-token" (include "univrs.fullname" .)) .Values.agent.api.existingSecret -}}
{{- end -}}

{{/* The MCP Service name. */}}
{{- define "univrs.mcp.serviceName" -}}
{{- printf "%s-mcp" (include "univrs.fullname" .) -}}
{{- end -}}

{{/*
A random token kept across upgrades: the existing Secret's value when there is one (lookup), a
new 48-character one otherwise. (dict "ctx" $ "secret" NAME "key" KEY); prints base64.
*/}}
{{- define "univrs.keptToken" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* RUST_LOG and any extra environment: (dict "level" LEVEL "extra" LIST). */}}
{{- define "univrs.env" -}}
- name: RUST_LOG
  value: {{ .level | quote }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
