{{/*
Names, labels and the pieces every workload of the head-end shares.
*/}}

{{- define "headend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: release-chart, unless the release name already holds the chart name. */}}
{{- define "headend.fullname" -}}
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

{{- define "headend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "headend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "headend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "headend.labels" -}}
helm.sh/chart: {{ include "headend.chart" . }}
{{ include "headend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: headend
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one role ("intake", "poller", "push"): call with (dict "ctx" $ "role" "intake"). */}}
{{- define "headend.roleLabels" -}}
{{ include "headend.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "headend.roleSelectorLabels" -}}
{{ include "headend.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "headend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "headend.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image, its tag defaulting to the chart's appVersion; a digest wins over the tag. */}}
{{- define "headend.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "headend.cnpgName" -}}
{{- printf "%s-db" (include "headend.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The Secret and key holding DATABASE_URL: the one named in database.existingSecret; else, with
cnpg.enabled, the application secret CloudNativePG writes for its Cluster (key "uri"); else
<fullname>-database (key database.existingSecretKey), which the operator creates (see NOTES).
*/}}
{{- define "headend.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.cnpg.enabled }}
{{- printf "%s-app" (include "headend.cnpgName" .) }}
{{- else }}
{{- printf "%s-database" (include "headend.fullname" .) }}
{{- end }}
{{- end }}

{{- define "headend.databaseSecretKey" -}}
{{- if and .Values.cnpg.enabled (not .Values.database.existingSecret) }}
{{- "uri" }}
{{- else }}
{{- .Values.database.existingSecretKey }}
{{- end }}
{{- end }}

{{/*
Values reach templates as JSON numbers (float64): toToml would write 4000 as 4000.0, which the
head-end refuses for an integer setting. Turns whole floats back into integers, in place, through
nested tables and arrays of tables ([[collect.groups]]).
*/}}
{{- define "headend.intify" -}}
{{- $m := . }}
{{- range $k, $v := $m }}
{{- if kindIs "map" $v }}
{{- include "headend.intify" $v }}
{{- else if kindIs "slice" $v }}
{{- $out := list }}
{{- range $e := $v }}
{{- if kindIs "map" $e }}
{{- include "headend.intify" $e }}
{{- $out = append $out $e }}
{{- else if and (kindIs "float64" $e) (eq $e (float64 (int64 $e))) }}
{{- $out = append $out (int64 $e) }}
{{- else }}
{{- $out = append $out $e }}
{{- end }}
{{- end }}
{{- $_ := set $m $k $out }}
{{- else if and (kindIs "float64" $v) (eq $v (float64 (int64 $v))) }}
{{- $_ := set $m $k (int64 $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The rendered headend.toml: the documented configuration with the chart's paths. */}}
{{- define "headend.configToml" -}}
{{- $cfg := deepCopy (default dict .Values.config) }}
{{- include "headend.intify" $cfg }}
{{- if .Values.dlmsKeys.existingSecret }}
{{- $dlms := default dict (get $cfg "dlms") }}
{{- $_ := set $dlms "keys_file" "/etc/headend/dlms/keys.csv" }}
{{- $_ := set $cfg "dlms" $dlms }}
{{- end }}
{{- toToml $cfg }}
{{- end }}

{{/* Settings that belong to a role, not to the shared file: refuse them there. */}}
{{- define "headend.checkConfig" -}}
{{- $collect := default dict (get (default dict .Values.config) "collect") }}
{{- if hasKey $collect "enabled" }}
{{- fail "config.collect.enabled is set per role by the chart (roles.poller.enabled); remove it from config" }}
{{- end }}
{{- $dlms := default dict (get (default dict .Values.config) "dlms") }}
{{- if hasKey $dlms "push_listen" }}
{{- fail "config.dlms.push_listen is set per role by the chart (roles.push.enabled, roles.push.port); remove it from config" }}
{{- end }}
{{- if hasKey $dlms "keys_file" }}
{{- fail "config.dlms.keys_file is set by the chart from dlmsKeys.existingSecret; remove it from config" }}
{{- end }}
{{- $http := default dict (get (default dict .Values.config) "http") }}
{{- if hasKey $http "listen" }}
{{- fail "config.http.listen is set by the chart from http.port; remove it from config" }}
{{- end }}
{{- $db := default dict (get (default dict .Values.config) "database") }}
{{- $mqtt := default dict (get (default dict .Values.config) "mqtt") }}
{{- if or (hasKey $db "url") (hasKey $mqtt "url") }}
{{- fail "config.database.url / config.mqtt.url may hold passwords: give them as Secrets (database.existingSecret, mqtt.existingSecret)" }}
{{- end }}
{{- if contains "@" (toString .Values.mqtt.url) }}
{{- fail "mqtt.url holds credentials: put the URL in a Secret and name it in mqtt.existingSecret" }}
{{- end }}
{{- end }}

{{/*
Environment of every head-end container: the URLs from Secrets (never from values) and the
operator's extra variables. HEADEND_<SECTION>__<KEY> overrides the file (config.rs).
*/}}
{{- define "headend.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "headend.databaseSecretName" . }}
      key: {{ include "headend.databaseSecretKey" . }}
{{- if .Values.mqtt.existingSecret }}
- name: MQTT_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mqtt.existingSecret }}
      key: {{ .Values.mqtt.existingSecretKey }}
{{- else if .Values.mqtt.url }}
- name: MQTT_URL
  value: {{ .Values.mqtt.url | quote }}
{{- end }}
- name: HEADEND_CONFIG
  value: /etc/headend/config/headend.toml
{{- range $k, $v := .Values.env }}
- name: {{ $k }}
  value: {{ include "headend.envValue" $v }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Container security context: non-root, read-only root, no capabilities, RuntimeDefault seccomp. */}}
{{- define "headend.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* An env value from values: whole numbers without the float notation (1e+06) toString would give. */}}
{{- define "headend.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . | toString | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}
