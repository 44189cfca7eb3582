{{/*
The pod template of one role. Call with (dict "ctx" $ "role" "intake").
Each role is `headend serve` with the shared headend.toml and a few HEADEND_* variables of its own.
*/}}
{{- define "headend.podTemplate" -}}
{{- $ := .ctx }}
{{- $role := .role }}
{{- $r := index $.Values.roles $role -}}
metadata:
  labels:
    {{- include "headend.roleLabels" . | nindent 4 }}
    headend/server: "true"
    {{- with $.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "headend.configToml" $ | sha256sum }}
    {{- with $.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $r.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "headend.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $.Values.automountServiceAccountToken }}
  enableServiceLinks: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $r.terminationGracePeriodSeconds }}
  containers:
    - name: headend
      image: {{ include "headend.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: ["serve"]
      env:
        {{- include "headend.commonEnv" $ | nindent 8 }}
        - name: HEADEND_HTTP__LISTEN
          value: "0.0.0.0:{{ $.Values.http.port }}"
        {{- if eq $role "poller" }}
        - name: HEADEND_COLLECT__ENABLED
          value: "true"
        {{- else }}
        - name: HEADEND_COLLECT__ENABLED
          value: "false"
        {{- end }}
        {{- if eq $role "push" }}
        - name: HEADEND_DLMS__PUSH_LISTEN
          value: "0.0.0.0:{{ $r.port }}"
        {{- end }}
        {{- if ne $role "intake" }}
        - name: HEADEND_MQTT__ENABLED
          value: "false"
        {{- end }}
        {{- range $k, $v := $r.env }}
        - name: {{ $k }}
          value: {{ include "headend.envValue" $v }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ $.Values.http.port }}
          protocol: TCP
        {{- if eq $role "push" }}
        - name: dlms-push
          containerPort: {{ $r.port }}
          protocol: TCP
        {{- end }}
      {{- with $.Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $r.resources | nindent 8 }}
      securityContext:
        {{- include "headend.containerSecurityContext" $ | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/headend/config
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if $.Values.dlmsKeys.existingSecret }}
        - name: dlms-keys
          mountPath: /etc/headend/dlms
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "headend.fullname" $ }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $.Values.dlmsKeys.existingSecret }}
    - name: dlms-keys
      secret:
        secretName: {{ $.Values.dlmsKeys.existingSecret }}
        defaultMode: 0400
        items:
          - key: {{ $.Values.dlmsKeys.existingSecretKey }}
            path: keys.csv
    {{- end }}
  {{- with $r.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $r.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml $r.topologySpreadConstraints | nindent 4 }}
  {{- else if $.Values.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
    - maxSkew: {{ $.Values.topologySpread.maxSkew }}
      topologyKey: {{ $key }}
      whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "headend.roleSelectorLabels" (dict "ctx" $ "role" $role) | nindent 10 }}
    {{- end }}
  {{- end }}
{{- end }}
