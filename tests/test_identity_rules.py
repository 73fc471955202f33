"""One tenant rule and one doc-id rule (vien.documents.identity), and every entry point applies it the same way:
`vien publish` (JSONL), the ingest worker (Kafka events -> DLQ), search, the store service and the API-key
table. Before this rule was shared, ingest indexed tenant "acme corp" and search refused it: documents that could
never be found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from vien.documents.events import PoisonEvent, decode_event, event_from_json
from vien.documents.identity import MAX_DOC_ID_CHARS, MAX_TENANT_CHARS, IdentityError
from vien.runtime.auth import ApiKeys
from vien.runtime.config import ConfigError, load_config
from vien.runtime.errors import InvalidArgument
from vien.store.factory import open_store
from vien.v1 import store_pb2
from vien.v1.documents_pb2 import DocumentEvent
from vien_search.logic import Searcher
from vien_store.grpc_app import StoreServicer

VALID_TENANTS = ["acme", "A", "team-1.eu:prod@x_y", "t" * MAX_TENANT_CHARS]
INVALID_TENANTS = ["", "acme corp", "a/b", " acme", "acme ", "-acme", "công-ty", "t" * (MAX_TENANT_CHARS + 1),
                   "ac\x1bme"]
VALID_DOC_IDS = ["1", "doc #1/ä b", "d" * MAX_DOC_ID_CHARS]
COLLECTION = load_config().profiles["e5-small"].collection
INVALID_DOC_IDS = ["", " d1", "d1 ", "a\nb", "a\x00b", "d" * (MAX_DOC_ID_CHARS + 1)]


def _publish(tenant: str, doc_id: str) -> None:
    event_from_json({"op": "upsert", "doc_id": doc_id, "tenant": tenant, "text": "xin chào"}, line=1)


def _ingest(tenant: str, doc_id: str) -> None:
    decode_event(DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id=doc_id, tenant=tenant, text="xin chào")
                 .SerializeToString())


def _ingest_delete(tenant: str, doc_id: str) -> None:
    decode_event(DocumentEvent(op=DocumentEvent.OP_DELETE, doc_id=doc_id, tenant=tenant).SerializeToString())


class _NoEmbedder:
    async def embed_query(self, *a: object, **k: object):  # sparse mode never embeds
        raise AssertionError("a sparse search must not call the query embedder")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    s = open_store(f"edge:{tmp_path_factory.mktemp('edge')}")
    prof = load_config().profiles["e5-small"]
    s.ensure_collection(prof.collection, prof.dims)
    yield s
    s.close()


def _search(store) -> Callable[[str, str], object]:
    searcher = Searcher(load_config(), _NoEmbedder(), store)  # type: ignore[arg-type]

    def run(tenant: str, _doc_id: str) -> object:
        return asyncio.run(searcher.search("giá vé máy bay", tenant, mode="sparse"))
    return run


def _store_delete(store) -> Callable[[str, str], object]:
    servicer = StoreServicer.__new__(StoreServicer)
    servicer.app = type("App", (), {"store": store})()

    def run(tenant: str, doc_id: str) -> object:
        req = store_pb2.DeleteRequest(collection=COLLECTION, tenant=tenant, doc_id=doc_id)
        return asyncio.run(servicer.Delete(req, None))  # type: ignore[arg-type]
    return run


def _api_keys(tenant: str, _doc_id: str) -> None:
    ApiKeys([(tenant, "sk-test")])


def _entry_points(store) -> dict[str, tuple[Callable[[str, str], object], type[Exception]]]:
    return {"vien publish": (_publish, ValueError), "ingest upsert": (_ingest, PoisonEvent),
            "ingest delete": (_ingest_delete, PoisonEvent), "search": (_search(store), InvalidArgument),
            "store delete": (_store_delete(store), InvalidArgument), "API keys": (_api_keys, ConfigError)}


@pytest.mark.parametrize("tenant", VALID_TENANTS)
def test_every_entry_point_accepts_a_valid_tenant(tenant: str, store) -> None:
    for _name, (call, _err) in _entry_points(store).items():
        call(tenant, "doc-1")


@pytest.mark.parametrize("tenant", INVALID_TENANTS)
def test_every_entry_point_refuses_an_invalid_tenant_naming_the_field(tenant: str, store) -> None:
    for name, (call, err) in _entry_points(store).items():
        with pytest.raises(err) as e:
            call(tenant, "doc-1")
        assert "tenant" in str(e.value), name
        if err is PoisonEvent:  # the DLQ reason code comes from the shared rule
            assert e.value.code in {"missing_tenant", "tenant_too_long", "tenant_invalid"}, name  # type: ignore[attr-defined]


DOC_ENTRY_POINTS = ("vien publish", "ingest upsert", "ingest delete", "store delete")


@pytest.mark.parametrize("doc_id", VALID_DOC_IDS)
def test_every_entry_point_accepts_a_valid_doc_id(doc_id: str, store) -> None:
    eps = _entry_points(store)
    for name in DOC_ENTRY_POINTS:
        eps[name][0]("acme", doc_id)


@pytest.mark.parametrize("doc_id", INVALID_DOC_IDS)
def test_every_entry_point_refuses_an_invalid_doc_id_naming_the_field(doc_id: str, store) -> None:
    eps = _entry_points(store)
    for name in DOC_ENTRY_POINTS:
        call, err = eps[name]
        with pytest.raises(err) as e:
            call("acme", doc_id)
        assert "doc_id" in str(e.value), name


def test_a_valid_tenant_with_no_documents_gets_no_hits_not_an_error(store) -> None:
    res = _search(store)("newcomer", "")
    assert res.hits == [] and res.profile  # type: ignore[attr-defined]


def test_identity_error_is_invalid_argument_with_a_stable_reason_code() -> None:
    from vien.documents.identity import check_tenant

    with pytest.raises(IdentityError) as e:
        check_tenant("acme corp")
    assert isinstance(e.value, InvalidArgument) and e.value.field == "tenant"
    assert e.value.reason_code == "tenant_invalid" and e.value.message.startswith("tenant: 'acme corp' must match")
