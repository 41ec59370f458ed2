{{/* The chart name. */}}
{{- define "canary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource. At most 52 characters: the CronJob controller appends
11 characters to a CronJob's name to name its Jobs.
*/}}
{{- define "canary.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "canary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "canary.labels" -}}
helm.sh/chart: {{ include "canary.chart" . }}
{{ include "canary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: canary
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The name of the Secret holding the token. */}}
{{- define "canary.tokenSecretName" -}}
{{- .Values.token.existingSecret | default (printf "%s-token" (include "canary.fullname" .)) }}
{{- end }}

{{/* The namespace of the Secret holding the token. */}}
{{- define "canary.tokenSecretNamespace" -}}
{{- .Values.token.namespace | default .Release.Namespace }}
{{- end }}

{{/* "true" when the Secret is read through the Kubernetes API (the default), "" when mounted. */}}
{{- define "canary.readsSecretThroughApi" -}}
{{- if not .Values.token.mount }}true{{ end }}
{{- end }}

{{/*
Checks of the values that the schema cannot express. Included by every template, so that
`helm template --show-only` fails as `helm install` does.
*/}}
{{- define "canary.validate" -}}
{{- $c := .Values.canary }}
{{- $t := .Values.token }}
{{- if not $c.hubUrl }}
{{- fail "canary.hubUrl is required: the hub's public URL, e.g. --set canary.hubUrl=https://hub.example.org/" }}
{{- end }}
{{- if not (regexMatch "^https?://[^/?#]+" $c.hubUrl) }}
{{- fail (printf "canary.hubUrl must be an http(s) URL such as https://hub.example.org/, got %q" $c.hubUrl) }}
{{- end }}
{{- if and $t.value $t.existingSecret }}
{{- fail "token.value and token.existingSecret are mutually exclusive: give one" }}
{{- end }}
{{- if not (or $t.value $t.existingSecret) }}
{{- fail "a token source is required: set token.existingSecret (a Secret holding the hub API token) or token.value" }}
{{- end }}
{{- if and $t.value $t.namespace (ne $t.namespace .Release.Namespace) }}
{{- fail "token.namespace applies to token.existingSecret only: the Secret made from token.value lives in the release namespace" }}
{{- end }}
{{- if and $t.mount (ne (include "canary.tokenSecretNamespace" .) .Release.Namespace) }}
{{- fail (printf "token.mount=true needs the Secret in the release namespace %q (a pod mounts only Secrets of its own namespace), but token.namespace is %q" .Release.Namespace $t.namespace) }}
{{- end }}
{{- if and $c.caBundle.configMap $c.caBundle.secret }}
{{- fail "canary.caBundle.configMap and canary.caBundle.secret are mutually exclusive: give one" }}
{{- end }}
{{- if and $c.insecureSkipTlsVerify (or $c.caBundle.configMap $c.caBundle.secret) }}
{{- fail "canary.insecureSkipTlsVerify and canary.caBundle contradict each other: give one" }}
{{- end }}
{{- if le (float64 $c.deadline) (float64 $c.stopTimeout) }}
{{- fail (printf "canary.deadline (%v) must exceed canary.stopTimeout (%v): the deadline has to leave time to stop the server" $c.deadline $c.stopTimeout) }}
{{- end }}
{{- $minimum := include "canary.minActiveDeadlineSeconds" . | int }}
{{- if and (not (kindIs "invalid" .Values.job.activeDeadlineSeconds)) (lt (int .Values.job.activeDeadlineSeconds) $minimum) }}
{{- fail (printf "job.activeDeadlineSeconds (%v) must be at least canary.deadline + job.deadlineGraceSeconds (%d): otherwise Kubernetes kills the canary before its own deadline, before it can stop its server; leave it empty to derive it" .Values.job.activeDeadlineSeconds $minimum) }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.job.terminationGracePeriodSeconds)) (lt (float64 .Values.job.terminationGracePeriodSeconds) (float64 $c.stopTimeout)) }}
{{- fail (printf "job.terminationGracePeriodSeconds (%v) must be at least canary.stopTimeout (%v): after SIGTERM the canary still stops its server; leave it empty to derive it" .Values.job.terminationGracePeriodSeconds $c.stopTimeout) }}
{{- end }}
{{- end }}

{{/* The smallest activeDeadlineSeconds consistent with the canary's deadline. */}}
{{- define "canary.minActiveDeadlineSeconds" -}}
{{- add (ceil .Values.canary.deadline | int) .Values.job.deadlineGraceSeconds }}
{{- end }}

{{- define "canary.activeDeadlineSeconds" -}}
{{- if kindIs "invalid" .Values.job.activeDeadlineSeconds }}
{{- include "canary.minActiveDeadlineSeconds" . }}
{{- else }}
{{- .Values.job.activeDeadlineSeconds | int }}
{{- end }}
{{- end }}

{{- define "canary.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.job.terminationGracePeriodSeconds }}
{{- add (ceil .Values.canary.stopTimeout | int) 30 }}
{{- else }}
{{- .Values.job.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* The port of canary.hubUrl, for the NetworkPolicy. */}}
{{- define "canary.hubPort" -}}
{{- $url := urlParse .Values.canary.hubUrl }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}
{{- else if eq $url.scheme "https" }}443
{{- else }}80
{{- end }}
{{- end }}
