{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "rwop-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else "<release>-<name>" (or "<release>" when it already holds
the name). Truncated to 63 characters: it names the Service, hence a DNS label.
*/}}
{{- define "rwop-guard.fullname" -}}
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

{{- define "rwop-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "rwop-guard.labels" -}}
helm.sh/chart: {{ include "rwop-guard.chart" . }}
{{ include "rwop-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rwop-guard
{{- end }}

{{/*
Selector labels: stable across upgrades (Deployment selectors are immutable).
*/}}
{{- define "rwop-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rwop-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "rwop-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rwop-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rwop-guard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Service's in-cluster DNS names: the serving certificate must cover the first (the API
server calls <service>.<namespace>.svc).
*/}}
{{- define "rwop-guard.dnsNames" -}}
{{- $svc := include "rwop-guard.fullname" . }}
- {{ printf "%s.%s.svc" $svc .Release.Namespace }}
- {{ printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Name of the Secret the pods mount at /tls.
*/}}
{{- define "rwop-guard.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.secretName is required when tls.mode=secret: the name of an existing kubernetes.io/tls Secret in the release namespace (see certs/README.md)" .Values.tls.secretName }}
{{- else }}
{{- printf "%s-tls" (include "rwop-guard.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Name of the cert-manager Certificate for the serving certificate (also the target of the
cert-manager.io/inject-ca-from annotation).
*/}}
{{- define "rwop-guard.servingCertificateName" -}}
{{- printf "%s-serving" (include "rwop-guard.fullname" .) }}
{{- end }}

{{/*
namespaceSelector shared by both webhooks: skip kube-system, the release namespace (so the
webhook never blocks the namespace it runs in) and webhooks.excludeNamespaces.
*/}}
{{- define "rwop-guard.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace }}
{{- range .Values.webhooks.excludeNamespaces }}
{{- $ns = append $ns . }}
{{- end }}
{{- toJson (uniq $ns) }}
{{- end }}

{{/*
CEL: true when a PersistentVolume update changes its access modes as a set (order and
duplicates do not count, as in rwop-guard's own comparison).
*/}}
{{- define "rwop-guard.celModesChange" -}}
has(object.spec.accessModes) != has(oldObject.spec.accessModes) || (has(object.spec.accessModes) && (!object.spec.accessModes.all(m, m in oldObject.spec.accessModes) || !oldObject.spec.accessModes.all(m, m in object.spec.accessModes)))
{{- end }}
