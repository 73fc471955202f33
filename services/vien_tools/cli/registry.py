"""The services of the mesh: name -> app factory and the setting that holds its address (what `vien serve` and
`vien up` start; a tool, so it may name every service)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vien.runtime.config import Settings
from vien.runtime.grpc_server import GrpcApp


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    app: str            # "module:Class", imported lazily so one service never loads another's deps
    address_attr: str   # Settings attribute with this service's address
    env: str            # environment variable other services use to reach it

    def create(self, settings: Settings) -> GrpcApp:
        module, cls = self.app.split(":")
        factory = getattr(importlib.import_module(module), cls)
        app: GrpcApp = factory(settings)
        return app

    def address(self, settings: Settings) -> str:
        return str(getattr(settings, self.address_attr))


SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec("query-embedder", "vien_query_embedder.grpc_app:QueryEmbedderApp", "query_embedder_addr",
                    "VIEN_QUERY_EMBEDDER_ADDR"),
        ServiceSpec("doc-embedder", "vien_doc_embedder.grpc_app:DocEmbedderApp", "doc_embedder_addr",
                    "VIEN_DOC_EMBEDDER_ADDR"),
        ServiceSpec("router", "vien_router.grpc_app:RouterApp", "router_addr", "VIEN_ROUTER_ADDR"),
        ServiceSpec("store", "vien_store.grpc_app:StoreApp", "store_addr", "VIEN_STORE_ADDR"),
        ServiceSpec("search", "vien_search.grpc_app:SearchApp", "search_addr", "VIEN_SEARCH_ADDR"),
        ServiceSpec("ingest", "vien_ingest.grpc_app:IngestApp", "ingest_addr", "VIEN_INGEST_ADDR"),
        # HTTP, not gRPC: `vien serve gateway` runs vien_gateway.server.serve (uvicorn), not run_app.
        ServiceSpec("gateway", "vien_gateway.app:GatewayApp", "http_addr", "VIEN_HTTP_ADDR"),
    )
}

