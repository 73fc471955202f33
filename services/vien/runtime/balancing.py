"""Request-level load balancing for every channel between services (and from the CLI to the mesh).

A service's address (VIEN_*_ADDR) is one of:
- `host:port`: one server (the channel still uses the service config below; a single backend is fine);
- `ip:port,ip:port,...`: a static list of replicas (what `vien up --replicas` hands its callers),
  turned into gRPC's `ipv4:` (or `ipv6:`) target;
- `dns:///name:port`: a name that resolves to every ready replica (a headless Kubernetes Service),
  re-resolved when a connection is lost (servers close connections after VIEN_MAX_CONNECTION_AGE_S, so
  clients also pick up pods that were added).

Every channel uses `round_robin` (gRPC's default, `pick_first`, sends every request to the first
backend it connected to; kube-proxy balances connections, not requests) over the replicas whose
grpc.health.v1 status is SERVING (client-side health checking), and retries UNAVAILABLE on
another replica for the idempotent RPCs: embeddings, language detection, profile listing, searches,
health checks. A replica killed mid-request costs its callers a retry, not a failure. Overload answers
(RESOURCE_EXHAUSTED) are not retried: that would amplify the overload.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from vien.runtime.config import ConfigError

# The RPCs that may run twice: reads and pure computations. Streams are not retried (a retry would have
# to replay what was already sent), nor are the store's writes (the store is a single process anyway).
IDEMPOTENT_RPCS: tuple[tuple[str, str], ...] = (
    ("vien.v1.QueryEmbedder", ""),
    ("vien.v1.DocEmbedder", "Encode"),
    ("vien.v1.Router", "Embed"),
    ("vien.v1.Router", "DetectLanguage"),
    ("vien.v1.Router", "ListProfiles"),
    ("vien.v1.Search", "Search"),
    ("vien.v1.VectorStore", "Query"),
    ("vien.v1.VectorStore", "Count"),
    ("vien.v1.VectorStore", "DocChunks"),
    ("vien.v1.VectorStore", "ListCollections"),
    ("grpc.health.v1.Health", "Check"),
)

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 3,                 # the first try and two retries, each on the next ready replica
    "initialBackoff": "0.02s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 3,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config() -> str:
    names = [{"service": s, **({"method": m} if m else {})} for s, m in IDEMPOTENT_RPCS]
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        # client-side health checking (grpc.health.v1 Watch): a replica gets requests only while it
        # reports SERVING, so not while it loads its model after a restart, nor while it drains
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
        # retries stop while more than half of a window of calls fail (a whole tier down), so that
        # they never multiply the load on a service that is already failing
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    }, separators=(",", ":"))


def balancing_options() -> list[tuple[str, Any]]:
    """Channel options of every client channel: round_robin + retries, and quick re-resolution/reconnects."""
    return [
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1),
        # re-resolve a dns:/// name at most every 5 s (default 30 s) when a connection is lost
        ("grpc.dns_min_time_between_resolutions_ms", 5_000),
        # a replica that was restarted gets traffic again within ~5 s (default back-off grows to 120 s)
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def _is_ip(host: str) -> int:
    """4 or 6 for an IP literal (IPv6 in brackets), 0 for a name."""
    try:
        return ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host).version
    except ValueError:
        return 0


def port_of(address: str) -> int:
    """The port of a `host:port` address (a server's own listening address)."""
    return int(address.rsplit(":", 1)[1])


def channel_target(address: str, what: str = "address") -> str:
    """The gRPC target for an address as configured (see the module docstring)."""
    address = address.strip()
    if "," not in address:
        return address
    parts = [p.strip() for p in address.split(",") if p.strip()]
    versions = set()
    for p in parts:
        host, sep, port = p.rpartition(":")
        if not sep or not port.isdigit() or not _is_ip(host):
            raise ConfigError(f"{what}={address!r}: a list of replicas must be ip:port entries (got {p!r}); "
                              "for a name that resolves to several replicas use dns:///name:port")
        versions.add(_is_ip(host))
    if len(versions) > 1:
        raise ConfigError(f"{what}={address!r}: mixes IPv4 and IPv6 replicas")
    return f"ipv{versions.pop()}:{','.join(parts)}"


def replica_addresses(address: str) -> list[str]:
    """The replicas an address lists (one for host:port or dns:///...)."""
    return [p.strip() for p in address.split(",") if p.strip()]
