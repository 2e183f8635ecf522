{{/* The chart's name, 63 characters at most (a DNS label). */}}
{{- define "kubescribe.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, prefixed with the chart's unless it has it. */}}
{{- define "kubescribe.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Not plain "kubescribe": the runtime pods of a SpeechModel carry that name. */}}
{{- define "kubescribe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubescribe.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of every object and of the operator pods. Argo CD's default label tracking rewrites
app.kubernetes.io/instance on the objects it applies (to the Application's name), so nothing
selects objects by it: the ServiceMonitor selects the Service by name, component and
kubescribe.io/release, which Argo CD leaves alone. (Pod template labels are not rewritten.)
*/}}
{{- define "kubescribe.labels" -}}
{{ include "kubescribe.selectorLabels" . }}
kubescribe.io/release: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubescribe
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{/* What the ServiceMonitor selects the operator's Service by: no label Argo CD rewrites. */}}
{{- define "kubescribe.serviceMonitorSelector" -}}
app.kubernetes.io/name: {{ include "kubescribe.name" . }}-operator
app.kubernetes.io/component: operator
kubescribe.io/release: {{ .Release.Name }}
{{- end -}}

{{/* The kopf peering object the replicas share: one per release unless named. */}}
{{- define "kubescribe.peeringName" -}}
{{- default (include "kubescribe.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
Checks a JSON schema cannot express (values.schema.json has the rest). Included by the
Deployment, so that `helm template`, `helm install` and `helm lint` all refuse them.
*/}}
{{- define "kubescribe.validate" -}}
{{- if and .Values.metrics.enabled (eq (int .Values.health.port) (int .Values.metrics.port)) -}}
{{- fail (printf "health.port and metrics.port are both %v: the operator serves them on two ports" .Values.health.port) -}}
{{- end -}}
{{- if and .Values.watchNamespaces (not .Values.createNamespaces) -}}
{{- /* lookup answers only when Helm talks to a cluster (install, upgrade); offline it is empty. */ -}}
{{- $existing := lookup "v1" "Namespace" "" "" -}}
{{- if $existing -}}
{{- $names := list -}}
{{- range $existing.items -}}
{{- $names = append $names .metadata.name -}}
{{- end -}}
{{- range .Values.watchNamespaces -}}
{{- if and (ne . $.Release.Namespace) (not (has . $names)) -}}
{{- fail (printf "watchNamespaces: namespace %q does not exist. Create it first (kubectl create namespace %s), or set createNamespaces=true to have the chart create it" . .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubescribe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubescribe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubescribe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Arguments of `kubescribe operator` (operator/kubescribe_operator/process.py). */}}
{{- define "kubescribe.operatorArgs" -}}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness-port={{ .Values.health.port }}
{{- if .Values.metrics.enabled }}
- --metrics-port={{ .Values.metrics.port }}
{{- else }}
- --metrics-port=0
{{- end }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
- --peering={{ include "kubescribe.peeringName" . }}
{{- end -}}
