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

{{/* CEL: the workload's pod template (a pod's own spec) mounts a claim (W2's matchConditions). */}}
{{- define "rwop-guard.celMountsClaim" -}}
(request.kind.kind == 'Pod' ? object.spec.?volumes : request.kind.kind == 'CronJob' ? object.spec.?jobTemplate.?spec.?template.?spec.?volumes : object.spec.?template.?spec.?volumes).orValue([]).exists(v, has(v.persistentVolumeClaim))
{{- end }}

{{/*
CEL: true when a PersistentVolume update changes its access modes as a set (order and
duplicates do not count, as in rwop-guard's own comparison).
*/}}
{{- define "rwop-guard.celModesChange" -}}
has(object.spec.accessModes) != has(oldObject.spec.accessModes) || (has(object.spec.accessModes) && (!object.spec.accessModes.all(m, m in oldObject.spec.accessModes) || !oldObject.spec.accessModes.all(m, m in object.spec.accessModes)))
{{- end }}

{{/*
The MutatingAdmissionPolicy API version to render: v1 (Kubernetes >= 1.36), v1beta1 (1.34-1.35
with the MutatingAdmissionPolicy feature gate and admissionregistration.k8s.io/v1beta1 enabled),
or empty when the cluster serves neither. engine.mutatingAdmissionPolicy "auto" asks the cluster
(helm install/upgrade see its APIs; `helm template` sees none unless given --api-versions).
*/}}
{{- define "rwop-guard.mapVersion" -}}
{{- $want := .Values.engine.mutatingAdmissionPolicy -}}
{{- if eq $want "auto" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" -}}
v1
{{- else if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy" -}}
v1beta1
{{- end -}}
{{- else if ne $want "none" -}}
{{ $want }}
{{- end -}}
{{- end }}

{{/*
Which engine runs each rule, as JSON: {"validation": V2 and W1, "mutation": M1, "keep": M2,
"workloads": W2 (webhook only)},
each "webhook", "inTree" or "" (off). engine.mode:
  auto    - validation in-tree (ValidatingAdmissionPolicy) unless webhooks.scope=all asks for
            every write to be reviewed by rwop-guard; M1 by the webhook (it needs cluster facts:
            the CSI provisioner, the default class, a named volume); M2 in-tree where the
            cluster serves MutatingAdmissionPolicy, else by the webhook.
  webhook - every rule by the webhook (the chart before in-tree policies).
  inTree  - every rule in-tree: no Deployment, Service or certificate. Fails when the values
            ask for what only the webhook can do.
*/}}
{{- define "rwop-guard.engines" -}}
{{- $mode := .Values.engine.mode -}}
{{- $map := include "rwop-guard.mapVersion" . -}}
{{- $m := .Values.policy.mutation -}}
{{- $keep := .Values.webhooks.mutating.keepOnReapply -}}
{{- $e := dict "validation" "inTree" "mutation" "" "keep" "" "workloads" "" -}}
{{- /* W2 looks claims up in the webhook's caches: never in-tree; off with engine.mode=inTree. */ -}}
{{- if and (ne $mode "inTree") (ne (.Values.policy.workloads.action | default "warn") "off") -}}
{{- $_ := set $e "workloads" "webhook" -}}
{{- end -}}
{{- if eq $mode "webhook" -}}
{{- $_ := set $e "validation" "webhook" -}}
{{- if $m.enabled }}{{ $_ := set $e "mutation" "webhook" }}{{ end -}}
{{- if $keep }}{{ $_ := set $e "keep" "webhook" }}{{ end -}}
{{- else if eq $mode "inTree" -}}
{{- $why := "" -}}
{{- if eq .Values.webhooks.scope "all" -}}
{{- $why = "webhooks.scope=all (every write reviewed and logged by rwop-guard)" -}}
{{- else if and $m.enabled (not $m.storageClasses) -}}
{{- $why = "policy.mutation.enabled with an empty policy.mutation.storageClasses (in-tree, M1 mutates only claims of listed classes; finding CSI classes and the default class needs the webhook's cluster lookups)" -}}
{{- else if and $m.enabled (or $m.provisioners.allow $m.provisioners.deny) -}}
{{- $why = "policy.mutation.provisioners (it needs the StorageClasses, which only the webhook looks up)" -}}
{{- else if and (or $m.enabled $keep) (not $map) -}}
{{- $why = printf "%s, which needs MutatingAdmissionPolicy: Kubernetes >= 1.36, or 1.34-1.35 with the MutatingAdmissionPolicy feature gate and --runtime-config=admissionregistration.k8s.io/v1beta1=true (set engine.mutatingAdmissionPolicy when helm cannot ask the cluster, as with helm template)" (ternary "policy.mutation.enabled" "webhooks.mutating.keepOnReapply" $m.enabled) -}}
{{- end -}}
{{- if $why -}}
{{- fail (printf "engine.mode=inTree: the values ask for %s; only the webhook can do that: use engine.mode=auto or webhook" $why) -}}
{{- end -}}
{{- if $m.enabled }}{{ $_ := set $e "mutation" "inTree" }}{{ end -}}
{{- if $keep }}{{ $_ := set $e "keep" "inTree" }}{{ end -}}
{{- else -}}
{{- if eq .Values.webhooks.scope "all" }}{{ $_ := set $e "validation" "webhook" }}{{ end -}}
{{- if $m.enabled }}{{ $_ := set $e "mutation" "webhook" }}{{ end -}}
{{- if $keep }}{{ $_ := set $e "keep" (ternary "inTree" "webhook" (ne $map "")) }}{{ end -}}
{{- end -}}
{{- toJson $e -}}
{{- end }}

{{/* Non-empty when some rule runs in the webhook: the Deployment, Service, certificates. */}}
{{- define "rwop-guard.webhookNeeded" -}}
{{- $e := include "rwop-guard.engines" . | fromJson -}}
{{- if or (eq $e.validation "webhook") (eq $e.mutation "webhook") (eq $e.keep "webhook") (eq $e.workloads "webhook") -}}
true
{{- end -}}
{{- end }}

{{/* A CEL string literal (single-quoted), as `rwop-guard policy export` writes it. */}}
{{- define "rwop-guard.celString" -}}
'{{ . | replace "\\" "\\\\" | replace "'" "\\'" | replace "\n" "\\n" }}'
{{- end }}

{{/*
The reports CronJob's name, also its ServiceAccount's, ClusterRole's and ClusterRoleBinding's.
*/}}
{{- define "rwop-guard.reportsName" -}}
{{- printf "%s-reports" (include "rwop-guard.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the reports CronJob's objects: those of every object (rwop-guard.labels), with
component "reports" instead of "webhook", so no webhook selector (Service, PDB, NetworkPolicy)
ever picks its pods.
*/}}
{{- define "rwop-guard.reportsLabels" -}}
{{- $labels := include "rwop-guard.labels" . | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" "reports" }}
{{- toYaml $labels }}
{{- end }}

{{/*
The report resources the CronJob writes: the chosen format's two (RBAC names them).
*/}}
{{- define "rwop-guard.reportsResources" -}}
{{- if eq .Values.reports.format "openreports" -}}
{"group": "openreports.io", "resources": ["reports", "clusterreports"]}
{{- else if eq .Values.reports.format "policyreport" -}}
{"group": "wgpolicyk8s.io", "resources": ["policyreports", "clusterpolicyreports"]}
{{- else -}}
{{- fail (printf "reports.format must be openreports or policyreport (got %q)" .Values.reports.format) -}}
{{- end -}}
{{- end }}
