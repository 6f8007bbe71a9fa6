{{/* The name prefix of every object: fullnameOverride, or the release name (with the chart
name appended unless it is already in it). */}}
{{- define "oxbow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: Deployment, Service, roles. */}}
{{- define "oxbow.operatorName" -}}
{{- printf "%s-operator" (include "oxbow.fullname" .) -}}
{{- end -}}

{{- define "oxbow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object the chart creates. */}}
{{- define "oxbow.labels" -}}
helm.sh/chart: {{ include "oxbow.chart" . }}
app.kubernetes.io/part-of: oxbow
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels selecting the operator pods. */}}
{{- define "oxbow.operatorSelectorLabels" -}}
app.kubernetes.io/name: oxbow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "oxbow.operatorLabels" -}}
{{ include "oxbow.labels" . }}
{{ include "oxbow.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels the operator puts on every worker pod (crds/src/names.rs). */}}
{{- define "oxbow.workerSelectorLabels" -}}
app.kubernetes.io/name: oxbow-worker
app.kubernetes.io/managed-by: oxbow-operator
{{- end -}}

{{- define "oxbow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oxbow.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "oxbow.leaseName" -}}
{{- default (include "oxbow.operatorName" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "oxbow.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces that get worker objects, as a JSON list. */}}
{{- define "oxbow.workerNamespaces" -}}
{{- if .Values.worker.namespaces -}}
{{- .Values.worker.namespaces | uniq | toJson -}}
{{- else if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}
