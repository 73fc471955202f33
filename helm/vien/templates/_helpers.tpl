{{/* ---------- names and labels ---------- */}}
{{- define "vien.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vien.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vien.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects: <fullname>-<component>, e.g. vien-query-embedder. */}}
{{- define "vien.componentName" -}}
{{- printf "%s-%s" (include "vien.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vien.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vien.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of a component; `mesh: "true"` marks the vien services (NetworkPolicy peers). */}}
{{- define "vien.labels" -}}
helm.sh/chart: {{ include "vien.chart" .root }}
{{ include "vien.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: vien
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------- images ---------- */}}
{{/* The vien image of a service: .root, .svc (a service block; its image map overrides the global one). */}}
{{- define "vien.image" -}}
{{- $img := merge (deepCopy (default (dict) .svc.image)) .root.Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "vien.pullPolicy" -}}
{{- $img := merge (deepCopy (default (dict) .svc.image)) .root.Values.image -}}
{{- $img.pullPolicy -}}
{{- end -}}

{{/* ---------- endpoints ---------- */}}
{{- define "vien.serviceAddr" -}}
{{- $svc := index .root.Values.services .key -}}
{{- printf "%s:%v" (include "vien.componentName" (dict "root" .root "component" (kebabcase .key))) $svc.port -}}
{{- end -}}

{{/* The gRPC services other pods call with request-level balancing: each also gets a headless Service
     (<name>-headless, clusterIP: None: DNS answers every ready pod's IP) and its callers a dns:/// target,
     which the code's channels spread round_robin over (vien/runtime/balancing.py, docs/deploy.md). */}}
{{- define "vien.balancedServices" -}}
router queryEmbedder docEmbedder search
{{- end -}}

{{- define "vien.headlessName" -}}
{{- printf "%s-headless" (include "vien.componentName" (dict "root" .root "component" (kebabcase .key))) -}}
{{- end -}}

{{/* VIEN_*_ADDR of a service: dns:///<name>-headless:<port> for the balanced ones, <name>:<port> else. */}}
{{- define "vien.grpcTarget" -}}
{{- if has .key (splitList " " (include "vien.balancedServices" .)) -}}
{{- printf "dns:///%s:%v" (include "vien.headlessName" .) (index .root.Values.services .key).port -}}
{{- else -}}
{{- include "vien.serviceAddr" . -}}
{{- end -}}
{{- end -}}

{{- define "vien.vllm.name" -}}
{{- include "vien.componentName" (dict "root" . "component" "vllm") -}}
{{- end -}}

{{/* The OpenAI-compatible base URL of the in-chart vLLM Service (for the profiles' openai encoder). */}}
{{- define "vien.vllm.baseUrl" -}}
{{- printf "http://%s:%v/v1" (include "vien.vllm.name" .) .Values.vllm.port -}}
{{- end -}}

{{- define "vien.vllm.servedName" -}}
{{- default .Values.vllm.model.id .Values.vllm.model.servedName -}}
{{- end -}}

{{- define "vien.vectorStore" -}}
{{- if .Values.qdrant.enabled -}}
{{- printf "qdrant:http://%s:6334" (include "vien.componentName" (dict "root" . "component" "qdrant")) -}}
{{- else if .Values.qdrant.external.url -}}
{{- printf "qdrant:%s" .Values.qdrant.external.url -}}
{{- else if .Values.services.store.enabled -}}
{{- printf "remote:%s" (include "vien.serviceAddr" (dict "root" . "key" "store")) -}}
{{- else -}}
{{- fail "no vector store: enable qdrant, set qdrant.external.url, or enable services.store" -}}
{{- end -}}
{{- end -}}

{{- define "vien.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s:9092" (include "vien.componentName" (dict "root" . "component" "kafka")) -}}
{{- else if .Values.kafka.external.bootstrap -}}
{{- .Values.kafka.external.bootstrap -}}
{{- else -}}
{{- fail "no Kafka: enable kafka or set kafka.external.bootstrap" -}}
{{- end -}}
{{- end -}}

{{- define "vien.otelEndpoint" -}}
{{- if .Values.otelCollector.enabled -}}
{{- printf "http://%s:4317" (include "vien.componentName" (dict "root" . "component" "otel-collector")) -}}
{{- else -}}
{{- .Values.otelCollector.external.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "vien.secretName" -}}
{{- default (printf "%s-secrets" (include "vien.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "vien.configMapName" -}}
{{- default (printf "%s-profiles" (include "vien.fullname" .)) .Values.config.existingConfigMap -}}
{{- end -}}

{{/* A secretKeyRef env entry: .root, .env (variable name), .key (secrets.keys entry). Optional unless
     .required: a key that is not set leaves the variable unset; a required one keeps the pod waiting
     (CreateContainerConfigError) until the Secret holds it. */}}
{{- define "vien.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "vien.secretName" .root }}
      key: {{ index .root.Values.secrets.keys .key }}
      optional: {{ not .required }}
{{- end -}}

{{/* Refuse a model revision that is not a commit sha (40 hex digits): a branch, a tag or a placeholder
     such as REPLACE_WITH_COMMIT_SHA would let the model change under a running embedding space. */}}
{{- define "vien.pinnedRevision" -}}
{{- $rev := toString .revision -}}
{{- if not (regexMatch "^[0-9a-f]{40}$" $rev) -}}
{{- fail (printf "%s: revision %q is not pinned; set the 40-hex commit sha you validated" .what $rev) -}}
{{- end -}}
{{- $rev -}}
{{- end -}}

{{/* Where models.fetch entry .name lands: models.dir/<name>/<revision>, filled atomically by the fetch
     init container (a new revision is a new directory, never a half-written old one). Use it in the
     profiles: model: {{ include "vien.fetchedModel" (dict "root" . "name" "qwen3-embedding-0.6b-onnx") }} */}}
{{- define "vien.fetchedModel" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $found := "" -}}
{{- range $i, $m := $root.Values.models.fetch -}}
{{- if eq $m.name $name -}}
{{- $found = printf "%s/%s/%s" $root.Values.models.dir $m.name (include "vien.pinnedRevision" (dict "revision" $m.revision "what" (printf "models.fetch[%d] (%s)" $i $m.repo))) -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "vien.fetchedModel: no models.fetch entry named %q" $name) -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{/* The models a service's pods load (fetched exports, builtins, and the vLLM model behind the document
     side): a pod annotation, so a new model or revision rolls them and the doc-embedder's space guard
     runs again against it. */}}
{{- define "vien.modelsChecksum" -}}
{{- $root := . -}}
{{- $vllm := dict -}}
{{- if $root.Values.vllm.enabled -}}
{{- $vllm = dict "id" $root.Values.vllm.model.id "revision" $root.Values.vllm.model.revision "servedName" (include "vien.vllm.servedName" $root) -}}
{{- end -}}
{{- dict "fetch" $root.Values.models.fetch "build" $root.Values.models.build "vllm" $vllm | toJson | sha256sum -}}
{{- end -}}

{{/* Does a service need the models volume (it loads ONNX models)? */}}
{{- define "vien.needsModels" -}}
{{- /* ingest counts tokens with the document side's tokenizer, which lives in the models directory */ -}}
{{- if has .key (list "queryEmbedder" "docEmbedder" "ingest") -}}true{{- end -}}
{{- end -}}

{{/* Environment of a vien service: .root, .key, .svc. Addresses of the mesh, endpoints of the
     dependencies, the profiles file, then the chart-wide env and the service's own env (strings only);
     secrets only through secretKeyRef. */}}
{{- define "vien.env" -}}
{{- $root := .root -}}
- name: VIEN_HOST
  value: "0.0.0.0"
- name: VIEN_CONFIG
  value: {{ printf "%s/profiles.yaml" $root.Values.config.mountPath | quote }}
- name: VIEN_MODELS_DIR
  value: {{ $root.Values.models.dir | quote }}
- name: HOME
  value: /tmp
{{- range $k := list "router" "queryEmbedder" "docEmbedder" "store" "search" "ingest" }}
- name: {{ printf "VIEN_%s_ADDR" (snakecase $k | upper) }}
  value: {{ include "vien.grpcTarget" (dict "root" $root "key" $k) | quote }}
{{- end }}
{{- with $root.Values.grpc }}
- name: VIEN_MAX_CONNECTION_AGE_S
  value: {{ .maxConnectionAgeSeconds | quote }}
- name: VIEN_MAX_CONNECTION_AGE_GRACE_S
  value: {{ .maxConnectionAgeGraceSeconds | quote }}
{{- end }}
{{- if $root.Values.services.gateway.enabled }}
- name: VIEN_HTTP_ADDR
  value: {{ include "vien.serviceAddr" (dict "root" $root "key" "gateway") | quote }}
{{- end }}
{{- if has .key (list "search" "ingest") }}
- name: VIEN_VECTOR_STORE
  value: {{ include "vien.vectorStore" $root | quote }}
{{- include "vien.secretEnv" (dict "root" $root "env" "VIEN_QDRANT_API_KEY" "key" "qdrantApiKey") | nindent 0 }}
{{- end }}
{{- if eq .key "store" }}
- name: VIEN_STORE_BACKEND
  value: "edge:/data/store"
{{- end }}
{{- if has .key (list "ingest") }}
- name: VIEN_KAFKA_BOOTSTRAP
  value: {{ include "vien.kafkaBootstrap" $root | quote }}
- name: VIEN_DOCUMENTS_TOPIC
  value: {{ $root.Values.kafka.topics.documents | quote }}
- name: VIEN_DLQ_TOPIC
  value: {{ $root.Values.kafka.topics.dlq | quote }}
- name: VIEN_INGEST_GROUP
  value: {{ $root.Values.kafka.consumerGroup | quote }}
{{- end }}
{{- /* Redis: the query cache (query-embedder writes, router reads) and the accent-restoration statistics
     (ingest counts, router reads). */}}
{{- if has .key (list "queryEmbedder" "router" "ingest") }}
{{- if $root.Values.redis.enabled }}
- name: VIEN_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "vien.componentName" (dict "root" $root "component" "redis")) | quote }}
{{- else if $root.Values.redis.external.url }}
- name: VIEN_REDIS_URL
  value: {{ $root.Values.redis.external.url | quote }}
{{- else }}
{{- include "vien.secretEnv" (dict "root" $root "env" "VIEN_REDIS_URL" "key" "redisUrl") | nindent 0 }}
{{- end }}
{{- end }}
{{- if eq .key "docEmbedder" }}
{{- include "vien.secretEnv" (dict "root" $root "env" "VIEN_VLLM_API_KEY" "key" "vllmApiKey" "required" $root.Values.vllm.enabled) | nindent 0 }}
{{- end }}
{{- /* The edges share one key set: the gateway forwards the caller's key to the router, and search
     scopes every query to the key's tenant (docs/deploy.md, "API keys and tenants"). */}}
{{- if has .key (list "gateway" "router" "search") }}
{{- $keys := $root.Values.services.gateway.apiKeys }}
{{- include "vien.secretEnv" (dict "root" $root "env" "VIEN_API_KEYS" "key" "gatewayApiKeys" "required" $keys.required) | nindent 0 }}
{{- range $keys.fromSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default (include "vien.secretName" $root) .secretName }}
      key: {{ .key }}
      optional: false
{{- end }}
{{- end }}
{{- if has .key (list "queryEmbedder" "docEmbedder") }}
{{- /* ONNX intra-op threads = the container's CPU request (rounded up), not the node's cores */}}
{{- if dig "requests" "cpu" "" (default (dict) .svc.resources) }}
- name: VIEN_ORT_THREADS
  valueFrom:
    resourceFieldRef:
      resource: requests.cpu
      divisor: "1"
{{- /* its threads = the cores it requested: idle threads may spin briefly instead of sleeping (latency) */}}
{{- if and (eq .key "queryEmbedder") $root.Values.models.querySpinMicroseconds }}
- name: VIEN_ORT_SPIN
  value: "1"
- name: VIEN_ORT_SPIN_US
  value: {{ $root.Values.models.querySpinMicroseconds | quote }}
{{- end }}
{{- else }}
- name: VIEN_ORT_THREADS
  value: {{ $root.Values.models.defaultThreads | quote }}
{{- end }}
{{- end }}
{{- if $root.Values.metrics.enabled }}
- name: VIEN_METRICS_PORT
  value: {{ $root.Values.metrics.port | quote }}
{{- end }}
{{- $otel := include "vien.otelEndpoint" $root }}
{{- if $otel }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $otel | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: "true"
{{- end }}
{{- range $k, $v := merge (deepCopy (default (dict) .svc.env)) $root.Values.env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- with .svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}


{{/* The gateway's keys: the profiles file may name keys only by key_env (an inline `key:` would sit in the
     ConfigMap), and every key_env must be delivered from a Secret (services.gateway.apiKeys.fromSecret),
     or the gateway would refuse to start. Checked only for the chart's own ConfigMap. */}}
{{- define "vien.gatewayKeysCheck" -}}
{{- $root := . -}}
{{- if not $root.Values.config.existingConfigMap -}}
{{- $cfg := fromYaml (tpl $root.Values.config.profiles $root) -}}
{{- $delivered := list "VIEN_API_KEYS" -}}
{{- range $root.Values.services.gateway.apiKeys.fromSecret -}}
{{- $delivered = append $delivered .env -}}
{{- end -}}
{{- range $section := list "auth" "openai" -}}
{{- range $i, $k := (dig $section "api_keys" (list) $cfg) -}}
{{- if hasKey $k "key" -}}
{{- fail (printf "config.profiles %s.api_keys[%d] (tenant %v): an inline key would sit in the ConfigMap; use key_env and services.gateway.apiKeys.fromSecret" $section $i $k.tenant) -}}
{{- end -}}
{{- if and (hasKey $k "key_env") (not (has $k.key_env $delivered)) -}}
{{- fail (printf "config.profiles %s.api_keys[%d].key_env %v: no services.gateway.apiKeys.fromSecret entry delivers it (the edges would not start)" $section $i $k.key_env) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}


{{/* checksum/secrets: the chart-managed Secret's content, so a changed key restarts the pods that read it at
     start. A Secret you manage yourself (secrets.existingSecret) is outside the chart: set
     secrets.rolloutAnnotation (e.g. Stakater Reloader's) or roll the pods when you change it. */}}
{{- define "vien.secretsChecksum" -}}
{{- if and .Values.secrets.create (not .Values.secrets.existingSecret) -}}
checksum/secrets: {{ .Values.secrets.values | toJson | sha256sum }}
{{- else if .Values.secrets.rolloutAnnotation -}}
{{ toYaml .Values.secrets.rolloutAnnotation }}
{{- end -}}
{{- end -}}
