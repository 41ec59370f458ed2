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

{{/*
The hub's URL as the canary normalises it (app/config.py, _hub_url): surrounding white space trimmed
and a trailing slash added when there is none; the case, the port and the path stay as written, as
they do in the canary. The canary labels what it pushes with this spelling (hub="..."), so every place
the chart writes the hub (CANARY_HUB_URL, the alerts' selectors and texts, NOTES.txt, the
NetworkPolicy's port) takes it from here, never from .Values.canary.hubUrl: `https://hub.example.org`
and `https://hub.example.org/` give the same label and the same selectors.
*/}}
{{- define "canary.hubUrl" -}}
{{- $url := trim .Values.canary.hubUrl }}
{{- ternary $url (printf "%s/" $url) (hasSuffix "/" $url) }}
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

{{/* "true" when the pod uses the Kubernetes API at all: to read the Secret, or to record the run's
Event on its Job (events.enabled); "" when it needs no API credentials. */}}
{{- define "canary.usesKubernetesApi" -}}
{{- if or (include "canary.readsSecretThroughApi" .) .Values.events.enabled }}true{{ end }}
{{- end }}

{{/*
Checks of the values that the schema cannot express. Included by every template, so that
`helm template --show-only` fails as `helm install` does. The checks of one probe's settings run
once per probe (canary.validateProbe); without `probes` the only probe is the top-level check.
*/}}
{{- define "canary.validate" -}}
{{- $c := .Values.canary }}
{{- $t := .Values.token }}
{{- $probes := include "canary.probes" . | fromJson }}
{{- if and .Values.prometheusRule.enabled (not .Values.prometheusRule.kubeStateMetrics) (not .Values.pushgateway.url) }}
{{- fail "prometheusRule.kubeStateMetrics=false leaves only the pushed metrics' alerts, and they need pushgateway.url: set it, or keep kubeStateMetrics" }}
{{- end }}
{{- if not (trim $c.hubUrl) }}
{{- fail "canary.hubUrl is required: the hub's public URL, e.g. --set canary.hubUrl=https://hub.example.org/" }}
{{- end }}
{{- /* What the canary accepts (app/config.py _hub_url), no more: a scheme of any case, a host, a port up
to 65535, a path; no `?` or `#` even empty, no white space or control character (Unicode's) inside. */}}
{{- $hub := include "canary.hubUrl" . }}
{{- $shape := `^(?i:https?)://(?:[^/?#\p{Z}\p{Cc}]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]\p{Z}\p{Cc}]+)(?::([0-9]*))?(?:/[^?#\p{Z}\p{Cc}]*)?$` }}
{{- $port := regexReplaceAll "^0+" (regexReplaceAll $shape $hub "${1}") "" }}
{{- if or (not (regexMatch $shape $hub)) (gt (len $port) 5) (gt (atoi $port) 65535) }}
{{- fail (printf "canary.hubUrl must be an http(s) URL such as https://hub.example.org/, without a query or fragment, white space or control characters inside, with a host and a port up to 65535; got %q" $c.hubUrl) }}
{{- end }}
{{- if and $t.value $t.existingSecret }}
{{- fail "token.value and token.existingSecret are mutually exclusive: give one" }}
{{- end }}
{{- if and $probes.sharedToken (not (or $t.value $t.existingSecret)) }}
{{- fail (printf "a token source is required: set token.existingSecret (a Secret holding the hub API token) or token.value%s" (ternary "" ", or token.existingSecret in every probe" (empty .Values.probes))) }}
{{- end }}
{{- if and $t.value $t.namespace (ne $t.namespace .Release.Namespace) }}
{{- fail "token.namespace applies to token.existingSecret only: the Secret made from token.value lives in the release namespace" }}
{{- end }}
{{- if and $c.caBundle.configMap $c.caBundle.secret }}
{{- fail "canary.caBundle.configMap and canary.caBundle.secret are mutually exclusive: give one" }}
{{- end }}
{{- if and $c.insecureSkipTlsVerify (or $c.caBundle.configMap $c.caBundle.secret) }}
{{- fail "canary.insecureSkipTlsVerify and canary.caBundle contradict each other: give one" }}
{{- end }}
{{- $servers := dict }}
{{- range $probe := $probes.probes }}
{{- $ctx := include "canary.probeContext" (list $ $probe) | fromJson }}
{{- $where := ternary "" (printf "probes.%s: " $probe.name) $probe.legacy }}
{{- if gt (len $probe.cronjobName) 52 }}
{{- fail (printf "probes.%s: the CronJob name %q has %d characters, Kubernetes allows 52 (it appends 11 to name the Jobs): shorten the probe's name or set fullnameOverride" $probe.name $probe.cronjobName (len $probe.cronjobName)) }}
{{- end }}
{{- $server := printf "%s/%s" $ctx.Values.canary.user $ctx.Values.canary.serverName }}
{{- with get $servers $server }}
{{- fail (printf "probes %s and %s both use user %q and server name %q: each would stop the other's server as stale (the canary stops a leftover server before it spawns); give them different serverName values or users" . $probe.name $ctx.Values.canary.user $ctx.Values.canary.serverName) }}
{{- end }}
{{- $_ := set $servers $server $probe.name }}
{{- with include "canary.probeProblem" $ctx }}
{{- fail (printf "%s%s" $where .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The first problem of one probe's settings (the argument: its context), or nothing. */}}
{{- define "canary.probeProblem" -}}
{{- $c := .Values.canary }}
{{- $t := .Values.token }}
{{- if and $t.mount (ne (include "canary.tokenSecretNamespace" .) .Release.Namespace) }}
{{- printf "token.mount=true needs the Secret in the release namespace %q (a pod mounts only Secrets of its own namespace), but token.namespace is %q" .Release.Namespace $t.namespace }}
{{- else if le (float64 $c.deadline) (float64 $c.stopTimeout) }}
{{- printf "canary.deadline (%v) must exceed canary.stopTimeout (%v): the deadline has to leave time to stop the server" $c.deadline $c.stopTimeout }}
{{- else if and (not (kindIs "invalid" .Values.job.activeDeadlineSeconds)) (lt (int .Values.job.activeDeadlineSeconds) (include "canary.minActiveDeadlineSeconds" . | int)) }}
{{- printf "job.activeDeadlineSeconds (%v) must be at least canary.deadline + job.deadlineGraceSeconds (%d): otherwise Kubernetes kills the canary before its own deadline, before it can stop its server; leave it empty to derive it" .Values.job.activeDeadlineSeconds (include "canary.minActiveDeadlineSeconds" . | int) }}
{{- else if and $c.freshUser (not (regexMatch "^jupyterhub-canary-fresh-.+" $c.user)) }}
{{- printf "freshUser=true needs a user named jupyterhub-canary-fresh-<something> (the canary deletes and recreates that user every run, and the hub's fresh-user role covers only such names), but user is %q: set this probe's user, e.g. jupyterhub-canary-fresh-default" $c.user }}
{{- else if and $c.notebook $c.notebookConfigMap.name }}
{{- printf "canary.notebook and canary.notebookConfigMap.name are both set (to a notebook and to ConfigMap %q): give the notebook inline or name the ConfigMap that holds it, not both" $c.notebookConfigMap.name }}
{{- else if and (not (kindIs "invalid" .Values.job.terminationGracePeriodSeconds)) (lt (float64 .Values.job.terminationGracePeriodSeconds) (float64 $c.stopTimeout)) }}
{{- printf "job.terminationGracePeriodSeconds (%v) must be at least canary.stopTimeout (%v): after SIGTERM the canary still stops its server; leave it empty to derive it" .Values.job.terminationGracePeriodSeconds $c.stopTimeout }}
{{- end }}
{{- end }}

{{/*
The probes, as JSON: {"probes": [{name, legacy, cronjobName, ownToken, values}], "sharedToken": bool}.
`values` is the probe's view of .Values: the top-level settings with the probe's overrides (canary.*
settings, cronjob.schedule/suspend, resources, token; extraEnv is appended). Without `probes` the one
probe is the top-level check itself ("legacy": named `default`, its CronJob named as before, no
probe label, no CANARY_PROBE), so today's values render as they always did.
*/}}
{{- define "canary.probes" -}}
{{- $fullname := include "canary.fullname" . }}
{{- $list := list }}
{{- $shared := false }}
{{- if not .Values.probes }}
{{- $list = append $list (dict "name" "default" "legacy" true "cronjobName" $fullname "ownToken" false "values" .Values) }}
{{- $shared = true }}
{{- else }}
{{- range $name, $p := .Values.probes }}
{{- $p = $p | default dict }}
{{- $v := deepCopy $.Values }}
{{- $_ := unset $v "probes" }}
{{- range $key := list "user" "freshUser" "serverName" "userOptions" "checkKernel" "kernelName" "kernelTimeout" "checkStorage" "storagePath" "checkLab" "labPath" "checkUrls" "notebook" "notebookConfigMap" "notebookTimeout" "spawnTimeout" "stopTimeout" "requestTimeout" "deadline" "attempts" }}
{{- if hasKey $p $key }}{{ $_ := set $v.canary $key (index $p $key) }}{{ end }}
{{- end }}
{{- range $key := list "schedule" "suspend" }}
{{- if hasKey $p $key }}{{ $_ := set $v.cronjob $key (index $p $key) }}{{ end }}
{{- end }}
{{- if hasKey $p "resources" }}{{ $_ := set $v "resources" $p.resources }}{{ end }}
{{- if hasKey $p "slowSpawnSeconds" }}{{ $_ := set $v.prometheusRule "slowSpawnSeconds" $p.slowSpawnSeconds }}{{ end }}
{{- if $p.extraEnv }}{{ $_ := set $v "extraEnv" (concat ($v.extraEnv | default list) $p.extraEnv) }}{{ end }}
{{- $own := and $p.token $p.token.existingSecret }}
{{- if $own }}
{{- $_ := set $v "token" (dict "value" "" "existingSecret" $p.token.existingSecret "key" ($p.token.key | default $.Values.token.key) "namespace" ($p.token.namespace | default $.Values.token.namespace) "mount" $.Values.token.mount) }}
{{- else }}
{{- $shared = true }}
{{- end }}
{{- $list = append $list (dict "name" $name "legacy" false "cronjobName" (printf "%s-%s" $fullname $name) "ownToken" (not (not $own)) "values" $v) }}
{{- end }}
{{- end }}
{{- dict "probes" $list "sharedToken" $shared | toJson }}
{{- end }}

{{/*
The context a probe's templates render with (the argument: (list $ probe)): the root's Release,
Chart and Capabilities, and the probe's values. The helpers below take it in place of the root.
*/}}
{{- define "canary.probeContext" -}}
{{- $root := index . 0 }}
{{- dict "Values" (index . 1).values "Release" (dict "Name" $root.Release.Name "Namespace" $root.Release.Namespace "Service" $root.Release.Service) "Chart" (dict "Name" $root.Chart.Name "Version" $root.Chart.Version "AppVersion" $root.Chart.AppVersion) | toJson }}
{{- end }}

{{/* The probe label of a probe's resources (the argument: the probe); none for the legacy probe. */}}
{{- define "canary.probeLabels" -}}
{{- if not .legacy }}
jupyterhub-canary/probe: {{ .name }}
{{- end }}
{{- end }}

{{/*
The probe's notebook (the argument: (list context probe)), as JSON {"configMap", "key", "inline"}:
the chart's own ConfigMap `<cronjob>-notebook` for an inline `canary.notebook`, else
`canary.notebookConfigMap`; {} when the probe has none.
*/}}
{{- define "canary.notebook" -}}
{{- $probe := index . 1 }}
{{- $c := (index . 0).Values.canary }}
{{- if $c.notebook }}
{{- dict "configMap" (printf "%s-notebook" $probe.cronjobName) "key" "notebook.ipynb" "inline" true | toJson }}
{{- else if $c.notebookConfigMap.name }}
{{- dict "configMap" $c.notebookConfigMap.name "key" $c.notebookConfigMap.key "inline" false | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/*
The name of a manual Job of a CronJob (the argument: its name) before "-$(date +%s)" (NOTES.txt).
A Job's name is its pods' `job-name` label, at most 63 characters: the suffix takes 11 (10 digits until
the year 2286), so the CronJob's name is cut to 45 to leave "-manual" its 7.
*/}}
{{- define "canary.manualJobPrefix" -}}
{{- printf "%s-manual" (. | trunc 45 | trimSuffix "-") }}
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
{{- include "canary.urlPort" (include "canary.hubUrl" .) }}
{{- end }}

{{/* The port of an http(s) URL (the argument): its explicit port, else 443 or 80. */}}
{{- define "canary.urlPort" -}}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}
{{- else if eq $url.scheme "https" }}443
{{- else }}80
{{- end }}
{{- end }}

{{/*
Seconds between two runs of cronjob.schedule: prometheusRule.schedulePeriodSeconds, else derived
from the common schedule forms, else a `fail` that asks for it.
*/}}
{{- define "canary.schedulePeriodSeconds" -}}
{{- $s := .Values.cronjob.schedule | trim }}
{{- $given := .Values.prometheusRule.schedulePeriodSeconds }}
{{- if not (kindIs "invalid" $given) }}{{ $given | int }}
{{- else if regexMatch "^\\*/[0-9]+ \\* \\* \\* \\*$" $s }}{{ mul (regexFind "[0-9]+" $s | int) 60 }}
{{- else if eq $s "* * * * *" }}60
{{- else if or (eq $s "@hourly") (regexMatch "^[0-9]+ \\* \\* \\* \\*$" $s) }}3600
{{- else if regexMatch "^[0-9]+ \\*/[0-9]+ \\* \\* \\*$" $s }}{{ mul (regexFind "/[0-9]+" $s | trimPrefix "/" | int) 3600 }}
{{- else if or (eq $s "@daily") (eq $s "@midnight") (regexMatch "^[0-9]+ [0-9]+ \\* \\* \\*$" $s) }}86400
{{- else }}
{{- fail (printf "prometheusRule.schedulePeriodSeconds is required: the period of cronjob.schedule %q cannot be derived (the forms understood: */N * * * *, M * * * *, M */N * * *, M H * * *, @hourly, @daily)" $s) }}
{{- end }}
{{- end }}

{{/*
Seconds without a success after which the no-success alerts fire: prometheusRule.noSuccessSeconds, else
two periods plus the Job's deadline.
*/}}
{{- define "canary.noSuccessSeconds" -}}
{{- $given := .Values.prometheusRule.noSuccessSeconds }}
{{- if not (kindIs "invalid" $given) }}{{ $given | int }}
{{- else }}
{{- add (mul 2 (include "canary.schedulePeriodSeconds" . | int)) (include "canary.activeDeadlineSeconds" . | int) }}
{{- end }}
{{- end }}

{{/*
The exit-code contract (app/exit_codes.py MEANING), for NOTES.txt and the alerts' annotations.
tests/test_chart.py and tests/test_alerts.py check it against the CLI's table.
*/}}
{{- define "canary.exitCodes" -}}
[
  [0, "healthy: spawned, verified, stopped"],
  [1, "internal error (a bug in the canary)"],
  [10, "spawn failed (the hub or spawner reported failure)"],
  [11, "spawn timed out"],
  [12, "server unreachable (ready per the hub, but api/status failed)"],
  [13, "stop failed: server left running (or --fresh-user's user not deleted)"],
  [14, "kernel failed: no kernel started, or it did not run the test code (--check-kernel)"],
  [15, "storage failed: a file could not be saved, read back or deleted in the home (--check-storage)"],
  [16, "notebook failed: a cell of --notebook raised or did not finish"],
  [17, "JupyterLab failed: its page or a bundle it loads, or a --check-url page, is not served (--check-lab, --check-url)"],
  [18, "another live run of this probe holds its lease or its server (nothing was touched), or another token rotate wrote the Secret first"],
  [20, "hub unavailable (connection errors, 5xx, 429 after retries)"],
  [21, "Kubernetes API unreachable (the token Secret, the probe's Lease), or a write's outcome unknown"],
  [77, "permission: token rejected by the hub, or Kubernetes forbids the Secret or the Lease"],
  [78, "configuration: bad flag or variable, invalid options, no token, Secret, key or the probe's Lease missing"],
  [130, "interrupted by SIGINT, after cleanup"],
  [143, "interrupted by SIGTERM, after cleanup"]
]
{{- end }}

{{/* One line per exit code: "<code>  <meaning>". */}}
{{- define "canary.exitCodeLines" -}}
{{- range $i, $pair := include "canary.exitCodes" . | fromJsonArray }}
{{- if $i }}{{ "\n" }}{{ end }}
{{- printf "%-4v %s" (index $pair 0) (index $pair 1) }}
{{- end }}
{{- end }}

{{/* A Prometheus alert template that names the meaning of the exit code in $value. */}}
{{- define "canary.exitCodeMeaning" -}}
{{ "{{" }} $code := printf "%.0f" $value {{ "}}" }}
{{- range $i, $pair := include "canary.exitCodes" . | fromJsonArray }}
{{- if $i }}{{ "{{" }} else if eq $code "{{ index $pair 0 }}" {{ "}}" }}{{ else }}{{ "{{" }} if eq $code "{{ index $pair 0 }}" {{ "}}" }}{{ end }}
{{- index $pair 0 }}: {{ index $pair 1 }}
{{- end }}
{{- "{{" }} else {{ "}}" }}{{ "{{" }} $code {{ "}}" }}: not a code of this canary version{{ "{{" }} end {{ "}}" }}
{{- end }}
