"""API keys of the edges (router, search, HTTP gateway): bearer key -> tenant.

Keys come from the profiles file (`auth.api_keys`, and the older `openai.api_keys`) and from
VIEN_API_KEYS="tenant:key,...". No key at all = open mode (each edge logs a warning at start).

* Only sha256 digests of the keys are kept, and a presented key is compared with every digest by
  hmac.compare_digest, without stopping at a match: the time taken does not depend on which key (if
  any) matched, nor on how much of one did.
* Error messages and logs never contain the presented key.
* The caller of the current RPC (tenant + its `authorization` value) lives in a ContextVar, set by the
  server's handler wrapper (grpc_server.run_app): `caller_tenant` scopes requests, `forward_metadata`
  passes the caller's own key on to the next edge (search -> router), so that the router checks the
  real caller. Internal services (embedders, store, ingest) check no key: they trust the mesh, which
  NetworkPolicy (Helm) and optionally mTLS (vien.runtime.tls) close to outsiders; a shared key between
  services would only move the secret around, while mTLS proves the peer is a mesh service.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from vien.documents.identity import IdentityError, check_tenant
from vien.runtime import env
from vien.runtime.config import ConfigError, VienConfig
from vien.runtime.errors import PermissionDenied, Unauthenticated

AUTHORIZATION = "authorization"


@dataclass(frozen=True)
class Caller:
    tenant: str
    authorization: str  # the header as received, forwarded verbatim to the next edge


_caller: ContextVar[Caller | None] = ContextVar("vien_caller", default=None)


def parse_api_keys(raw: str) -> list[tuple[str, str]]:
    """VIEN_API_KEYS="tenant:key,tenant2:key2" -> [(tenant, key)]; a bare key belongs to tenant 'default'."""
    out = []
    for i, item in enumerate(x.strip() for x in raw.split(",")):
        if not item:
            continue
        tenant, sep, key = item.partition(":")
        if not sep:
            tenant, key = "default", item
        if not tenant.strip() or not key.strip():
            raise ConfigError(f"environment VIEN_API_KEYS item {i}: expected tenant:key")
        out.append((tenant.strip(), key.strip()))
    return out


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The key set of an edge. Empty = open mode: every call is let in with tenant ""."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._entries: list[tuple[bytes, str]] = []
        for tenant, key in pairs:
            try:
                check_tenant(tenant)
            except IdentityError as e:
                raise ConfigError(f"API key of tenant {tenant!r}: {e}") from e
            self._entries.append((_digest(key), tenant))

    @classmethod
    def load(cls, config: VienConfig, environ: Mapping[str, str]) -> ApiKeys:
        pairs: list[tuple[str, str]] = []
        for where, items in (("auth.api_keys", config.auth.api_keys), ("openai.api_keys", config.openai.api_keys)):
            for i, k in enumerate(items):
                key = k.key
                if k.key_env is not None:
                    key = environ.get(k.key_env, "").strip()
                    if not key:
                        raise ConfigError(f"{where}[{i}].key_env: environment variable {k.key_env} is not set")
                assert key is not None
                pairs.append((k.tenant, key))
        pairs += parse_api_keys(env.get("VIEN_API_KEYS", environ))
        return cls(pairs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant_of(self, key: str) -> str | None:
        d = _digest(key)
        found = None
        for digest, tenant in self._entries:  # no early exit: constant time in the position of a match
            if hmac.compare_digest(d, digest):
                found = tenant
        return found

    def authenticate(self, authorization: str | None) -> str:
        """The tenant of `authorization: Bearer <key>`; "" in open mode. Raises Unauthenticated."""
        if not self._entries:
            return ""
        if not authorization or not authorization.strip():
            raise Unauthenticated("missing API key: send metadata `authorization: Bearer <key>`")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("malformed authorization: expected `Bearer <key>`")
        tenant = self.tenant_of(key.strip())
        if tenant is None:
            raise Unauthenticated("invalid API key")
        return tenant


def authorization_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for k, v in metadata or ():
        if k == AUTHORIZATION:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None


def set_caller(caller: Caller | None) -> None:
    _caller.set(caller)


def current_caller() -> Caller | None:
    return _caller.get()


def forward_metadata() -> list[tuple[str, str]]:
    """The caller's own authorization, for a call to the next edge (empty in open mode)."""
    c = _caller.get()
    return [(AUTHORIZATION, c.authorization)] if c is not None and c.authorization else []


def caller_tenant(requested: str, field: str = "tenant") -> str:
    """The tenant a request may act on: the caller's key's tenant when auth is on (an empty request
    field means "mine"; another tenant is PERMISSION_DENIED naming the field), the request's otherwise."""
    c = _caller.get()
    if c is None or not c.tenant:
        return requested
    if requested and requested != c.tenant:
        raise PermissionDenied(field, f"{requested!r} is not the tenant of your API key; leave it empty or "
                                      "send your own")
    return c.tenant


def client_authorization(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """Metadata a client (CLI, benchmarks) sends: `authorization: Bearer $VIEN_API_KEY` when set."""
    key = str(env.get("VIEN_API_KEY", environ))
    return [(AUTHORIZATION, f"Bearer {key}")] if key else []


class _ClientDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = [*(details.metadata or ()), *metadata]
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the client's authorization metadata to every call of a blocking channel."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_ClientDetails(client_call_details, self.metadata), request)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(_ClientDetails(client_call_details, self.metadata), request_iterator)


def with_client_key(channel: grpc.Channel, environ: Mapping[str, str]) -> grpc.Channel:
    """`channel` sending VIEN_API_KEY as a bearer key (unchanged when it is not set)."""
    md = client_authorization(environ)
    return grpc.intercept_channel(channel, BearerInterceptor(md)) if md else channel
