"""TLS and mTLS between services, with certificates made in tmp_path by `cryptography`.

A query-embedder and a router run as `vien serve` subprocesses with VIEN_TLS_*: the router's call to the
embedder is itself a TLS hop, so an Embed through the router proves servers and internal clients agree.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vien.runtime.config import ConfigError, Settings
from vien.runtime.tls import channel_for, tls_files
from vien.v1 import router_pb2, router_pb2_grpc
from vien_tools.cli.supervisor import free_port, grpc_serving


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None, ca: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = (b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("vien-mesh"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False))
    return b.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, one mesh cert+key signed by it, and a cert+key from an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _cert("vien test CA", ca_key, ca=True)
    mesh_key = _key()
    mesh = _cert("vien-mesh", mesh_key, ca.subject, ca_key)
    rogue_ca = _cert("rogue CA", other_key, ca=True)
    rogue_key = _key()
    rogue = _cert("rogue", rogue_key, rogue_ca.subject, other_key)
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM), "cert": mesh.public_bytes(serialization.Encoding.PEM),
             "key": _pem_key(mesh_key), "rogue_cert": rogue.public_bytes(serialization.Encoding.PEM),
             "rogue_key": _pem_key(rogue_key)}
    out = {}
    for n, data in files.items():
        (d / f"{n}.pem").write_bytes(data)
        out[n] = d / f"{n}.pem"
    return out


def _tls_env(pki: dict[str, Path], client_auth: bool) -> dict[str, str]:
    return {"VIEN_TLS_CERT": str(pki["cert"]), "VIEN_TLS_KEY": str(pki["key"]), "VIEN_TLS_CA": str(pki["ca"]),
            "VIEN_TLS_CLIENT_AUTH": "require" if client_auth else "none"}


def _settings(**kw) -> Settings:
    return Settings(**kw)


@pytest.fixture(scope="module")
def mtls_mesh(models_dir, pki, tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tls-mesh")
    ports = {"query-embedder": free_port(), "router": free_port()}
    addr = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
    # GRPC_VERBOSITY=info: gRPC core logs why it refused each handshake, which the tests below assert
    env = {**os.environ, **_tls_env(pki, client_auth=True), "VIEN_TRACING": "0", "GRPC_VERBOSITY": "info",
           "VIEN_QUERY_EMBEDDER_ADDR": addr["query-embedder"], "VIEN_DOC_EMBEDDER_ADDR": addr["query-embedder"]}
    for k in ("VIEN_REDIS_URL", "VIEN_API_KEYS"):
        env.pop(k, None)
    procs = []
    old = {k: os.environ.get(k) for k in _tls_env(pki, True)}
    os.environ.update(_tls_env(pki, True))  # grpc_serving() probes with the TLS settings of this process
    try:
        for name in ("query-embedder", "router"):
            log = tmp / f"{name}.log"
            with open(log, "wb") as f:
                argv = [sys.executable, "-m", "vien_tools", "serve", name, "--port", str(ports[name])]
                procs.append(subprocess.Popen(argv, env=env, stdout=f, stderr=f))
            deadline = time.monotonic() + 120
            while not grpc_serving(addr[name]):
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{name} under mTLS did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            assert f"({name}, mTLS)" in log.read_text()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield {**addr, "_log_dir": tmp}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _embed(channel: grpc.Channel) -> router_pb2.EmbedResponse:
    return router_pb2_grpc.RouterStub(channel).Embed(router_pb2.EmbedRequest(texts=["xin chào Hà Nội"]), timeout=10)


def test_mtls_calls_work_through_an_internal_hop_and_others_are_refused(mtls_mesh, pki) -> None:
    router = mtls_mesh["router"]
    s = _settings(tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"], tls_client_auth=True)
    with channel_for(router, s) as ch:  # router -> query-embedder is an mTLS hop as well
        e = _embed(ch).embeddings[0]
        assert e.dims == 384 and len(e.vector) == 384 * 4
    log = mtls_mesh["_log_dir"] / "router.log"
    # (what the client does wrong, its channel, the reason that must be given: by the router's TLS stack in its
    # log for a refused client, or to the client itself when it is the client that refuses the server)
    refused = [
        ("plaintext", grpc.insecure_channel(router), "server", "WRONG_VERSION_NUMBER"),
        ("TLS without a client cert", channel_for(router, _settings(tls_ca=pki["ca"])), "server",
         "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("a cert of another CA", grpc.secure_channel(router, grpc.ssl_channel_credentials(
            pki["ca"].read_bytes(), pki["rogue_key"].read_bytes(), pki["rogue_cert"].read_bytes())), "server",
         "CERTIFICATE_VERIFY_FAILED"),
        ("a server not trusted (no CA)", grpc.secure_channel(router, grpc.ssl_channel_credentials(
            None, pki["key"].read_bytes(), pki["cert"].read_bytes())), "client", "CERTIFICATE_VERIFY_FAILED"),
    ]
    for what, ch, side, reason in refused:
        seen = len(log.read_text().splitlines())
        with ch, pytest.raises(grpc.RpcError) as err:
            _embed(ch)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what
        if side == "client":
            assert reason in (err.value.details() or ""), (what, err.value.details())
        else:
            new = [ln for ln in log.read_text().splitlines()[seen:] if "Handshake failed" in ln]
            assert any(reason in ln for ln in new), (what, new)
    # the server name can differ from the address (a Service DNS name in the cert)
    named = _settings(tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"], tls_server_name="vien-mesh")
    with channel_for(router, named) as ch:
        assert _embed(ch).embeddings


def test_cli_embed_follows_the_tls_settings(mtls_mesh, pki) -> None:
    env = {**os.environ, **_tls_env(pki, client_auth=True), "VIEN_TRACING": "0"}
    out = subprocess.run([sys.executable, "-m", "vien_tools", "embed", "--router", mtls_mesh["router"], "xin chào"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    plain = subprocess.run([sys.executable, "-m", "vien_tools", "embed", "--router", mtls_mesh["router"],
                            "--timeout", "3", "xin chào"], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in env.items() if not k.startswith("VIEN_TLS_")})
    assert plain.returncode != 0


def test_half_configured_tls_fails_naming_the_variable(pki, tmp_path) -> None:
    assert tls_files(_settings()) is None
    for kw, var in (({"tls_cert": pki["cert"]}, "VIEN_TLS_KEY"),
                    ({"tls_client_auth": True}, "VIEN_TLS_CLIENT_AUTH"),
                    ({"tls_cert": pki["cert"], "tls_key": pki["key"], "tls_client_auth": True}, "VIEN_TLS_CA"),
                    ({"tls_ca": tmp_path / "missing.pem"}, "VIEN_TLS_CA")):
        with pytest.raises(ConfigError, match=var):
            tls_files(_settings(**kw))
    os.environ["VIEN_TLS_CLIENT_AUTH"] = "sometimes"
    try:
        with pytest.raises(ConfigError, match="VIEN_TLS_CLIENT_AUTH"):
            Settings.from_env()
    finally:
        del os.environ["VIEN_TLS_CLIENT_AUTH"]


def test_tls_without_client_auth_serves_any_client_that_trusts_the_ca(pki) -> None:
    """Server-side TLS only: a router in this process (run_app) answers ListProfiles over TLS."""
    import asyncio
    import threading

    from vien.runtime.grpc_server import run_app
    from vien_router.grpc_app import RouterApp

    port = free_port()
    s = _settings(tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"])
    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    t = threading.Thread(target=loop.run_until_complete, args=(run_app(RouterApp(s), s, port, ready=ready, stop=stop),))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not ready.is_set() and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        assert ready.is_set()
        addr = f"127.0.0.1:{port}"
        with channel_for(addr, _settings(tls_ca=pki["ca"])) as ch:  # no client cert needed
            r = router_pb2_grpc.RouterStub(ch).ListProfiles(router_pb2.ListProfilesRequest(), timeout=10)
            assert "e5-small" in {p.name for p in r.profiles}
        with grpc.insecure_channel(addr) as ch, pytest.raises(grpc.RpcError) as err:
            router_pb2_grpc.RouterStub(ch).ListProfiles(router_pb2.ListProfilesRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(timeout=30)
        loop.close()
