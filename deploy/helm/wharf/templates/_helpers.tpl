{{/* Names and labels. */}}
{{- define "wharf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wharf.fullname" -}}
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

{{- define "wharf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wharf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wharf.labels" -}}
helm.sh/chart: {{ include "wharf.chart" . }}
{{ include "wharf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "wharf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wharf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wharf.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Is the embedded SQLite store used (no store.url)? "true" or "". */}}
{{- define "wharf.embeddedStore" -}}
{{- if not .Values.store.url }}true{{ end }}
{{- end }}

{{/* Does the pod use a ReadWriteOnce volume (two pods must never run at once)? "true" or "". */}}
{{- define "wharf.singleWriterVolume" -}}
{{- if and (include "wharf.embeddedStore" .) .Values.persistence.enabled }}true{{ end }}
{{- if and (eq .Values.mode "sidecar") .Values.registry.persistence.enabled (not (has "ReadWriteMany" .Values.registry.persistence.accessModes)) }}true{{ end }}
{{- end }}

{{/* Is there a Secret with upstream TLS files? "true" or "". */}}
{{- define "wharf.upstreamTls" -}}
{{- with .Values.upstream }}
{{- if or .existingSecret .ca_bundle .client_cert .client_key }}true{{ end }}
{{- end }}
{{- end }}

{{/* The scheme of wharf's own listener. */}}
{{- define "wharf.scheme" -}}
{{- if .Values.tls.existingSecret }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* preStop + shutdown_grace + margin, or the value given (checked in wharf.validate). */}}
{{- define "wharf.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.preStopSleepSeconds .Values.shutdownGraceSeconds 10 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express; each failure names the value to change.
*/}}
{{- define "wharf.validate" -}}
{{- $v := .Values }}
{{- if and (gt (int $v.replicaCount) 1) (not $v.store.url) }}
{{- fail (printf "replicaCount: %d needs store.url (PostgreSQL, shared by every replica): the embedded SQLite store belongs to one wharf process. Set store.url=postgres://USER@HOST:5432/DB, or replicaCount=1 (docs/kubernetes.md, \"Several replicas\")" (int $v.replicaCount)) }}
{{- end }}
{{- if and (not $v.adminPassword) (not $v.existingSecret) }}
{{- fail "adminPassword: set it (helm install --set adminPassword=...), or existingSecret to a Secret that holds it under existingSecretKeys.adminPassword" }}
{{- end }}
{{- if and $v.adminPassword $v.existingSecret }}
{{- fail "adminPassword and existingSecret: set one of them (existingSecret holds the admin password)" }}
{{- end }}
{{- if and $v.adminPassword (lt (len $v.adminPassword) 12) }}
{{- fail "adminPassword: must be at least 12 characters (wharf refuses a shorter one at start)" }}
{{- end }}
{{- if and $v.sideApiToken (lt (len $v.sideApiToken) 16) }}
{{- fail "sideApiToken: must be at least 16 characters" }}
{{- end }}
{{- if eq $v.mode "standalone" }}
{{- if not $v.upstream.registry }}
{{- fail "upstream.registry: mode standalone needs the URL of the existing registry, e.g. --set upstream.registry=http://registry.registry.svc:5000" }}
{{- end }}
{{- else }}
{{- if $v.upstream.registry }}
{{- fail (printf "upstream.registry: must be empty in mode sidecar (wharf uses the registry container at http://127.0.0.1:%d); use mode=standalone for an existing registry" (int $v.registry.port)) }}
{{- end }}
{{- if gt (int $v.replicaCount) 1 }}
{{- if and $v.registry.persistence.enabled (not (has "ReadWriteMany" $v.registry.persistence.accessModes)) }}
{{- fail "registry.persistence: with replicaCount > 1 every registry container needs the same storage: use object storage (registry.config.storage.s3 ..., registry.persistence.enabled=false) or a ReadWriteMany volume" }}
{{- end }}
{{- if and (not $v.registry.existingConfigSecret) (not (dig "http" "secret" "" $v.registry.config)) }}
{{- fail "registry.config.http.secret: with replicaCount > 1 every registry container needs the same http.secret (uploads move between pods)" }}
{{- end }}
{{- end }}
{{- end }}
{{- $grace := include "wharf.terminationGracePeriodSeconds" . | int }}
{{- if le $grace (add $v.preStopSleepSeconds $v.shutdownGraceSeconds | int) }}
{{- fail (printf "terminationGracePeriodSeconds: %d must be longer than preStopSleepSeconds + shutdownGraceSeconds (%d), or Kubernetes kills wharf before in-flight requests finish" $grace (add $v.preStopSleepSeconds $v.shutdownGraceSeconds | int)) }}
{{- end }}
{{- if or (and $v.upstream.client_cert (not $v.upstream.client_key)) (and $v.upstream.client_key (not $v.upstream.client_cert)) }}
{{- fail "upstream.client_cert and upstream.client_key: set both or neither" }}
{{- end }}
{{- if and $v.upstream.existingSecret (or $v.upstream.ca_bundle $v.upstream.client_cert $v.upstream.client_key) }}
{{- fail "upstream.existingSecret: set it or upstream.ca_bundle/client_cert/client_key, not both" }}
{{- end }}
{{- if and $v.upstream.existingSecret (not (or $v.upstream.existingSecretHas.caBundle $v.upstream.existingSecretHas.clientCert)) }}
{{- fail "upstream.existingSecretHas: say what upstream.existingSecret holds (caBundle: true for ca.crt, clientCert: true for tls.crt and tls.key)" }}
{{- end }}
{{- range $key := list "listen" "data_dir" "external_url" "admin_password" "side_api_token" "shutdown_grace" "tls" }}
{{- if hasKey $v.config $key }}
{{- fail (printf "config.%s: set by the chart from its own values (docs/kubernetes.md, \"Values\"); remove it from config" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "registry" "chartmuseum" "ca_bundle" "client_cert" "client_key" }}
{{- if hasKey (default (dict) $v.config.upstream) $key }}
{{- fail (printf "config.upstream.%s: use the value upstream.%s instead" $key $key) }}
{{- end }}
{{- end }}
{{- range $key := list "url" "password_file" }}
{{- if hasKey (default (dict) $v.config.store) $key }}
{{- fail (printf "config.store.%s: use store.url and existingSecret instead" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Paths inside the wharf container. */}}
{{- define "wharf.configDir" -}}/etc/wharf/config{{- end }}
{{- define "wharf.upstreamTlsDir" -}}/etc/wharf/upstream-tls{{- end }}
{{- define "wharf.tlsDir" -}}/etc/wharf/tls{{- end }}
{{- define "wharf.secretsDir" -}}/etc/wharf/secrets{{- end }}
{{- define "wharf.dataDir" -}}/var/lib/wharf{{- end }}

{{/* wharf.yaml, rendered from the values. */}}
{{- define "wharf.config" -}}
{{- $v := .Values }}
{{- $upstream := dict }}
{{- if eq $v.mode "sidecar" }}
{{- $_ := set $upstream "registry" (printf "http://127.0.0.1:%d" (int $v.registry.port)) }}
{{- else }}
{{- $_ := set $upstream "registry" $v.upstream.registry }}
{{- end }}
{{- with $v.upstream.chartmuseum }}{{ $_ := set $upstream "chartmuseum" . }}{{ end }}
{{- $dir := include "wharf.upstreamTlsDir" . }}
{{- if or $v.upstream.ca_bundle (and $v.upstream.existingSecret $v.upstream.existingSecretHas.caBundle) }}
{{- $_ := set $upstream "ca_bundle" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- if or $v.upstream.client_cert (and $v.upstream.existingSecret $v.upstream.existingSecretHas.clientCert) }}
{{- $_ := set $upstream "client_cert" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $upstream "client_key" (printf "%s/tls.key" $dir) }}
{{- end }}
{{- $base := dict "listen" (printf "0.0.0.0:%d" (int $v.containerPort)) "data_dir" (include "wharf.dataDir" .) "shutdown_grace" (printf "%ds" (int $v.shutdownGraceSeconds)) "upstream" $upstream }}
{{- with $v.externalUrl }}{{ $_ := set $base "external_url" . }}{{ end }}
{{- if not $v.existingSecret }}
{{- $_ := set $base "admin_password" $v.adminPassword }}
{{- with $v.sideApiToken }}{{ $_ := set $base "side_api_token" . }}{{ end }}
{{- end }}
{{- if $v.tls.existingSecret }}
{{- $_ := set $base "tls" (dict "cert" (printf "%s/tls.crt" (include "wharf.tlsDir" .)) "key" (printf "%s/tls.key" (include "wharf.tlsDir" .))) }}
{{- end }}
{{- if $v.store.url }}
{{- $store := dict "url" $v.store.url }}
{{- if and $v.existingSecret $v.existingSecretKeys.storePassword }}
{{- $_ := set $store "password_file" (printf "%s/store-password" (include "wharf.secretsDir" .)) }}
{{- end }}
{{- $_ := set $base "store" $store }}
{{- end }}
{{- toYaml (mustMergeOverwrite (deepCopy $v.config) $base) }}
{{- end }}

{{/* The registry's config.yml (sidecar), http.addr forced to localhost. */}}
{{- define "wharf.registryConfig" -}}
{{- $cfg := deepCopy .Values.registry.config }}
{{- $http := default (dict) $cfg.http }}
{{- $_ := set $http "addr" (printf "127.0.0.1:%d" (int .Values.registry.port)) }}
{{- $_ := set $cfg "http" $http }}
{{- toYaml $cfg }}
{{- end }}
