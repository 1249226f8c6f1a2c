{{/* Names ---------------------------------------------------------------------------------------- */}}
{{- define "llm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llm-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.litellm.fullname" -}}{{ include "llm-gateway.fullname" . }}-litellm{{- end -}}
{{- define "llm-gateway.operator.fullname" -}}{{ include "llm-gateway.fullname" . }}-operator{{- end -}}
{{- define "llm-gateway.stub.fullname" -}}{{ include "llm-gateway.fullname" . }}-bedrock-stub{{- end -}}
{{- define "llm-gateway.postgresql.fullname" -}}{{ include "llm-gateway.fullname" . }}-postgresql{{- end -}}

{{- define "llm-gateway.litellm.serviceAccountName" -}}
{{- if .Values.litellm.serviceAccount.create -}}
{{- default (include "llm-gateway.litellm.fullname" .) .Values.litellm.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.litellm.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "llm-gateway.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------------------- */}}
{{- define "llm-gateway.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: llm-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of objects that belong to no component (default tiers). */}}
{{- define "llm-gateway.labels" -}}
{{ include "llm-gateway.baseLabels" . }}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "litellm") */}}
{{- define "llm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-gateway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llm-gateway.componentLabels" -}}
{{ include "llm-gateway.baseLabels" .ctx }}
{{ include "llm-gateway.selectorLabels" . }}
{{- end -}}

{{/* Images: a digest wins over the tag; the schema forbids floating tags. (dict "image" .Values.x.image "default" "tag") */}}
{{- define "llm-gateway.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.litellm.image" -}}
{{- $image := .Values.litellm.image -}}
{{- if not $image.digest -}}
{{- fail "litellm.image.digest is required: the sha256 digest of ghcr.io/berriai/litellm-non_root:v1.108.7 (see values.yaml)" -}}
{{- end -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- end -}}

{{/* Container securityContext shared by every container we run. */}}
{{- define "llm-gateway.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ .readOnly }}
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Settings --------------------------------------------------------------------------------------- */}}
{{- define "llm-gateway.litellm.internalUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "llm-gateway.litellm.fullname" .) .Release.Namespace (int .Values.litellm.service.port) -}}
{{- end -}}

{{- define "llm-gateway.gatewayPublicUrl" -}}
{{- if .Values.operator.gatewayPublicUrl -}}
{{- .Values.operator.gatewayPublicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s/v1" .Values.ingress.host -}}
{{- else -}}
{{- fail "operator.gatewayPublicUrl is required when the Ingress is disabled (the base URL users call, ending in /v1)" -}}
{{- end -}}
{{- end -}}

{{- define "llm-gateway.masterKeySecretName" -}}
{{- if eq .Values.litellm.masterKeySecret.masterKeyKey .Values.litellm.masterKeySecret.saltKeyKey -}}
{{- fail "litellm.masterKeySecret: the salt key must be a separate key from the master key (CVE-2026-114612)" -}}
{{- end -}}
{{- required "litellm.masterKeySecret.name is required: an existing Secret holding the master key and a separate salt key" .Values.litellm.masterKeySecret.name -}}
{{- end -}}

{{/* The LiteLLM config: the shared files/litellm-config.yaml plus what this deployment adds (Redis). */}}
{{- define "llm-gateway.litellm.config" -}}
{{- $config := .Files.Get "files/litellm-config.yaml" | fromYaml -}}
{{- if hasKey $config "Error" -}}
{{- fail (printf "files/litellm-config.yaml does not parse: %s" (get $config "Error")) -}}
{{- end -}}
{{- $redis := .Values.litellm.redis -}}
{{- if $redis.enabled -}}
{{- $general := get $config "general_settings" | default dict -}}
{{- $coordination := dict "host" $redis.host "port" (int $redis.port) "ssl" $redis.ssl -}}
{{- $router := get $config "router_settings" | default dict -}}
{{- $_ := set $router "redis_host" $redis.host -}}
{{- $_ := set $router "redis_port" (int $redis.port) -}}
{{- /* The Router opens its own Redis connection: TLS and the ACL user reach it only via cache_kwargs. */ -}}
{{- $routerCache := dict "ssl" $redis.ssl -}}
{{- if $redis.username -}}
{{- $_ := set $coordination "username" $redis.username -}}
{{- $_ := set $routerCache "username" $redis.username -}}
{{- end -}}
{{- $_ := set $router "cache_kwargs" $routerCache -}}
{{- if $redis.passwordSecret.name -}}
{{- $_ := set $coordination "password" "os.environ/REDIS_PASSWORD" -}}
{{- $_ := set $router "redis_password" "os.environ/REDIS_PASSWORD" -}}
{{- end -}}
{{- $_ := set $general "coordination_redis" $coordination -}}
{{- if $redis.failClosedRateLimits -}}
{{- $_ := set $general "fail_closed_rate_limit_enforcement" true -}}
{{- end -}}
{{- $_ := set $config "general_settings" $general -}}
{{- $_ := set $config "router_settings" $router -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Keys and database: shared by the serving pods and the migration Job (only existing Secrets). */}}
{{- define "llm-gateway.litellm.dbEnv" -}}
- name: LITELLM_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-gateway.masterKeySecretName" . }}
      key: {{ .Values.litellm.masterKeySecret.masterKeyKey }}
- name: LITELLM_SALT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-gateway.masterKeySecretName" . }}
      key: {{ .Values.litellm.masterKeySecret.saltKeyKey }}
{{- if .Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.auth.existingSecret is required when postgresql.enabled" .Values.postgresql.auth.existingSecret }}
      key: {{ .Values.postgresql.auth.passwordKey }}
- name: DATABASE_URL
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.auth.username (include "llm-gateway.postgresql.fullname" .) .Values.postgresql.auth.database | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "litellm.database.existingSecret.name is required (a Secret with DATABASE_URL), or enable postgresql for kind/dev" .Values.litellm.database.existingSecret.name }}
      key: {{ .Values.litellm.database.existingSecret.key }}
{{- end }}
{{- end -}}

{{/* The serving pods' environment. */}}
{{- define "llm-gateway.litellm.env" -}}
{{ include "llm-gateway.litellm.dbEnv" . }}
{{- if and .Values.litellm.redis.enabled .Values.litellm.redis.passwordSecret.name }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.litellm.redis.passwordSecret.name }}
      key: {{ .Values.litellm.redis.passwordSecret.key }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.aws.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.aws.region | quote }}
- name: AWS_STS_REGIONAL_ENDPOINTS
  value: {{ .Values.aws.irsa.stsRegionalEndpoints | quote }}
- name: LITELLM_LOCAL_MODEL_COST_MAP
  value: "True"
- name: LITELLM_LOG
  value: INFO
- name: DISABLE_SCHEMA_UPDATE
  value: "true"
{{- if .Values.bedrockStub.enabled }}
- name: AWS_BEDROCK_RUNTIME_ENDPOINT
  value: {{ printf "http://%s:8090" (include "llm-gateway.stub.fullname" .) | quote }}
{{- /* kind/dev only: no STS in the cluster, so a fake temporary credential the stub accepts by shape. */}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "llm-gateway.stub.fullname" . }}-fake-credentials, key: access-key-id}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "llm-gateway.stub.fullname" . }}-fake-credentials, key: secret-access-key}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "llm-gateway.stub.fullname" . }}-fake-credentials, key: session-token}
{{- end }}
{{- end -}}

{{/* Operator high availability (kopf peering) ------------------------------------------------------ */}}
{{- define "llm-gateway.operator.peeringName" -}}
{{- default (include "llm-gateway.operator.fullname" .) .Values.operator.highAvailability.peeringName -}}
{{- end -}}
