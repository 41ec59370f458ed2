{{/*
The canary's pod spec, shared by the CronJobs and the `helm test` Pod (the argument: (list context
probe), see canary.probeContext): the same container, variables, volumes and security context.
*/}}
{{- define "canary.podSpec" -}}
{{- $probe := index . 1 }}
{{- with index . 0 }}
{{- $c := .Values.canary }}
{{- $api := include "canary.readsSecretThroughApi" . }}
{{- $kubeApi := include "canary.usesKubernetesApi" . }}
{{- $notebook := include "canary.notebook" (list . $probe) | fromJson }}
restartPolicy: Never
{{- if $kubeApi }}
serviceAccountName: {{ include "canary.fullname" . }}
automountServiceAccountToken: true
{{- else }}
# The token is a mounted file: this pod needs no Kubernetes API credentials.
automountServiceAccountToken: false
{{- end }}
# Long enough for the canary to stop its server after SIGTERM.
terminationGracePeriodSeconds: {{ include "canary.terminationGracePeriodSeconds" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
containers:
  - name: canary
    image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: ["run"]
    env:
      - name: CANARY_HUB_URL
        value: {{ include "canary.hubUrl" . | quote }}
      - name: CANARY_USER
        value: {{ $c.user | quote }}
      {{- if $c.freshUser }}
      # A new user every run (probes.<name>.freshUser): deleted, created, spawned, checked, stopped, deleted.
      - name: CANARY_FRESH_USER
        value: "true"
      {{- end }}
      {{- if not $probe.legacy }}
      - name: CANARY_PROBE
        value: {{ $probe.name | quote }}
      {{- end }}
      {{- with $c.serverName }}
      - name: CANARY_SERVER_NAME
        value: {{ . | quote }}
      {{- end }}
      {{- with $c.userOptions }}
      - name: CANARY_USER_OPTIONS
        value: {{ toJson . | quote }}
      {{- end }}
      {{- if $api }}
      - name: CANARY_TOKEN_SECRET
        value: {{ include "canary.tokenSecretName" . | quote }}
      - name: CANARY_TOKEN_SECRET_KEY
        value: {{ .Values.token.key | quote }}
      - name: CANARY_TOKEN_SECRET_NAMESPACE
        value: {{ include "canary.tokenSecretNamespace" . | quote }}
      # One run of the probe at a time (the CronJob's, `helm test`, a Job made from the CronJob): a
      # second one exits 18 without touching the first's server.
      - name: CANARY_LEASE
        value: {{ $probe.cronjobName | quote }}
      - name: CANARY_LEASE_NAMESPACE
        value: {{ .Release.Namespace | quote }}
      {{- else }}
      - name: CANARY_TOKEN_FILE
        value: {{ printf "/etc/jupyterhub-canary/token/%s" .Values.token.key | quote }}
      {{- end }}
      {{- if and $kubeApi .Values.token.kubeRelaxedX509 }}
      - name: CANARY_KUBE_RELAXED_X509
        value: "true"
      {{- end }}
      {{- if .Values.events.enabled }}
      # The run's Event goes on its own Job, named by the labels the Job controller gives its Pods
      # (empty in the helm test Pod, which has no Job: no Event then).
      - name: CANARY_JOB_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.labels['batch.kubernetes.io/job-name']
      - name: CANARY_JOB_UID
        valueFrom:
          fieldRef:
            fieldPath: metadata.labels['batch.kubernetes.io/controller-uid']
      - name: CANARY_JOB_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      {{- end }}
      - name: CANARY_TOKEN_EXPIRY_WARNING
        value: {{ $c.tokenExpiryWarning | toString | quote }}
      - name: CANARY_SPAWN_TIMEOUT
        value: {{ $c.spawnTimeout | toString | quote }}
      - name: CANARY_STOP_TIMEOUT
        value: {{ $c.stopTimeout | toString | quote }}
      - name: CANARY_REQUEST_TIMEOUT
        value: {{ $c.requestTimeout | toString | quote }}
      - name: CANARY_CHECK_KERNEL
        value: {{ $c.checkKernel | toString | quote }}
      {{- with $c.kernelName }}
      - name: CANARY_KERNEL_NAME
        value: {{ . | quote }}
      {{- end }}
      - name: CANARY_KERNEL_TIMEOUT
        value: {{ $c.kernelTimeout | toString | quote }}
      {{- /* The checks of issue 15 only when asked for: they are off by default, and so is their variable. */}}
      {{- if $c.checkStorage }}
      - name: CANARY_CHECK_STORAGE
        value: "true"
      {{- with $c.storagePath }}
      - name: CANARY_STORAGE_PATH
        value: {{ . | quote }}
      {{- end }}
      {{- end }}
      {{- if $c.checkLab }}
      - name: CANARY_CHECK_LAB
        value: "true"
      - name: CANARY_LAB_PATH
        value: {{ $c.labPath | quote }}
      {{- end }}
      {{- with $c.checkUrls }}
      - name: CANARY_CHECK_URL
        value: {{ join " " . | quote }}
      {{- end }}
      {{- if $notebook }}
      - name: CANARY_NOTEBOOK
        value: {{ printf "/etc/jupyterhub-canary/notebook/%s" $notebook.key | quote }}
      - name: CANARY_NOTEBOOK_TIMEOUT
        value: {{ $c.notebookTimeout | toString | quote }}
      {{- end }}
      - name: CANARY_ATTEMPTS
        value: {{ $c.attempts | toString | quote }}
      - name: CANARY_DEADLINE
        value: {{ $c.deadline | toString | quote }}
      - name: CANARY_INSECURE_SKIP_TLS_VERIFY
        value: {{ $c.insecureSkipTlsVerify | toString | quote }}
      {{- if or $c.caBundle.configMap $c.caBundle.secret }}
      - name: CANARY_CA_BUNDLE
        value: {{ printf "/etc/jupyterhub-canary/ca/%s" $c.caBundle.key | quote }}
      {{- end }}
      {{- with .Values.pushgateway.url }}
      - name: CANARY_PUSHGATEWAY_URL
        value: {{ . | quote }}
      {{- end }}
      - name: CANARY_LOG_FORMAT
        value: {{ $c.logFormat | quote }}
      - name: CANARY_LOG_LEVEL
        value: {{ $c.logLevel | quote }}
      {{- with .Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    # The canary writes a one-line summary to /dev/termination-log; the log tail is the fallback.
    terminationMessagePolicy: FallbackToLogsOnError
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    {{- with .Values.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- if not $api }}
      - name: token
        mountPath: /etc/jupyterhub-canary/token
        readOnly: true
      {{- end }}
      {{- if or $c.caBundle.configMap $c.caBundle.secret }}
      - name: ca-bundle
        mountPath: /etc/jupyterhub-canary/ca
        readOnly: true
      {{- end }}
      {{- if $notebook }}
      - name: notebook
        mountPath: /etc/jupyterhub-canary/notebook
        readOnly: true
      {{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if not $api }}
  # optional: a missing Secret or key makes the canary exit 78 at once, naming the file,
  # instead of the pod waiting in ContainerCreating until the Job's deadline.
  - name: token
    secret:
      secretName: {{ include "canary.tokenSecretName" . }}
      defaultMode: 0440
      optional: true
  {{- end }}
  {{- with $c.caBundle.configMap }}
  - name: ca-bundle
    configMap:
      name: {{ . }}
      defaultMode: 0444
      optional: true
  {{- end }}
  {{- with $c.caBundle.secret }}
  - name: ca-bundle
    secret:
      secretName: {{ . }}
      defaultMode: 0440
      optional: true
  {{- end }}
  {{- if $notebook }}
  # optional, like the token: a missing ConfigMap or key makes the canary exit 78 at once, naming
  # the file, instead of the pod waiting in ContainerCreating.
  - name: notebook
    configMap:
      name: {{ $notebook.configMap }}
      items:
        - key: {{ $notebook.key }}
          path: {{ $notebook.key }}
      defaultMode: 0444
      optional: true
  {{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
