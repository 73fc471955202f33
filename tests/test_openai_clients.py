"""The client libraries teams already use, against a running gateway: LangChain's OpenAIEmbeddings with its
defaults (tiktoken token-id arrays), LlamaIndex's OpenAIEmbedding, a LangChain vector store round trip;
OpenAI-sized batches (2,048 inputs); the lexical sparse vector beside the dense one, loaded into Qdrant.

Token arrays need the tiktoken encoding the client used (cl100k_base for these model names), which these
machines cannot download: the tests that decode them use a locally trained BPE registered as cl100k_base
in tiktoken's registry (tiktoken_fixtures; "fake" in their names), in this process, where both LangChain
and an in-process gateway look it up. The missing-encoding error is checked against a gateway process
that has no way to load it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import pytest
import uvicorn
from openai import OpenAI
from openai_fixtures import gateway_process
from tiktoken_fixtures import local_encoding, registered

from vien.lexical import LexicalEncoder
from vien.runtime.auth import ApiKeys
from vien.runtime.config import Settings, load_config
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_gateway.app import GatewayApp
from vien_tools.cli.supervisor import free_port

ALIAS, DOC_ALIAS = "text-embedding-3-small", "text-embedding-3-small-document"
DOCS = [
    "Vé máy bay giá rẻ đi Đà Nẵng tháng này chỉ từ 499 nghìn đồng.",
    "Phở bò Hà Nội nấu từ xương ống hầm tám tiếng.",
    "The museum in Hue opens at eight in the morning and closes at five.",
    "Cà phê sữa đá là thức uống quen thuộc của người Sài Gòn.",
]
QUERIES = [("giá vé máy bay đi Đà Nẵng", 0), ("cách nấu phở bò", 1), ("when does the Hue museum open", 2),
           ("cà phê sữa đá", 3)]


def _sdk(address: str) -> OpenAI:
    return OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0, timeout=120)


def _reference(address: str, texts: list[str], model: str = ALIAS, **kw: Any) -> np.ndarray:
    """The gateway's own vectors for these texts, sent as text through the official SDK."""
    with _sdk(address) as c:
        r = c.embeddings.create(model=model, input=texts, encoding_format="float", **kw)
    return np.asarray([d.embedding for d in r.data], np.float32)


class _Recorder:
    """httpx event hook: the JSON bodies a client library really sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            self.bodies.append(json.loads(request.read()))


@pytest.fixture(scope="module")
def http_addr(mesh) -> str:
    return str(mesh.addrs["http"])


@pytest.fixture(scope="module")
def fake_cl100k() -> Iterator[Any]:
    with registered(local_encoding("cl100k_base")) as enc:
        yield enc


@pytest.fixture(scope="module")
def inproc_gateway(mesh, fake_cl100k) -> Iterator[str]:
    """The gateway app served by uvicorn in a thread of this process (so it sees the registered encoding)."""
    app = GatewayApp(Settings(router_addr=mesh.router), ApiKeys())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "in-process gateway did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def offline_gateway(mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway process that cannot load cl100k_base: an empty tiktoken cache and no route out (its
    HTTP(S) proxy is a closed loopback port), as on a machine without network."""
    tmp = tmp_path_factory.mktemp("offline-gateway")
    env = {"VIEN_ROUTER_ADDR": mesh.router, "TIKTOKEN_CACHE_DIR": str(tmp / "tiktoken-cache"),
           "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}", "HTTP_PROXY": f"http://127.0.0.1:{free_port()}",
           "NO_PROXY": "127.0.0.1,localhost"}
    with gateway_process(env, tmp / "gateway.log") as address:
        yield address


# ---- LangChain ---------------------------------------------------------------------------------------------


def test_langchain_defaults_send_token_arrays_decoded_with_fake_cl100k(inproc_gateway: str, fake_cl100k) -> None:
    from langchain_openai import OpenAIEmbeddings

    rec = _Recorder()
    with httpx.Client(event_hooks={"request": [rec]}) as http:
        emb = OpenAIEmbeddings(model=ALIAS, base_url=f"http://{inproc_gateway}/v1", api_key="unused",
                               max_retries=0, http_client=http)  # everything else: LangChain's defaults
        docs = np.asarray(emb.embed_documents(DOCS), np.float32)
        query = np.asarray(emb.embed_query(QUERIES[0][0]), np.float32)
    # it really sent token ids, tokenized with the encoding tiktoken gave it for this model name
    sent = rec.bodies[0]["input"]
    assert all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in sent)
    assert [fake_cl100k.decode(x) for x in sent] == DOCS
    # ... and got the vectors of the texts themselves (decoded, then the profile's own tokenizer)
    ref = _reference(inproc_gateway, [*DOCS, QUERIES[0][0]])
    assert docs.shape == (4, 384)
    np.testing.assert_allclose(docs, ref[:4], atol=2e-6)
    np.testing.assert_allclose(query, ref[4], atol=2e-6)


def test_langchain_text_mode_gives_the_same_vectors(http_addr: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=ALIAS, base_url=f"http://{http_addr}/v1", api_key="unused", max_retries=0,
                           check_embedding_ctx_length=False)
    np.testing.assert_allclose(np.asarray(emb.embed_documents(DOCS), np.float32), _reference(http_addr, DOCS),
                               atol=2e-6)
    # texts over the profile's token limit: refused as OpenAI refuses them, or truncated when asked
    long_text = "word " * 700
    with pytest.raises(openai.BadRequestError) as err:
        emb.embed_documents([long_text])
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "context_length_exceeded"
    truncating = OpenAIEmbeddings(model=ALIAS, base_url=f"http://{http_addr}/v1", api_key="unused", max_retries=0,
                                  check_embedding_ctx_length=False,
                                  model_kwargs={"extra_body": {"vien_truncate": True}})
    assert len(truncating.embed_documents([long_text])[0]) == 384


def test_langchain_defaults_without_the_encoding_get_a_helpful_error(offline_gateway: str, fake_cl100k) -> None:
    """LangChain (here with the fake encoding) sends token ids; the gateway cannot load cl100k_base."""
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=ALIAS, base_url=f"http://{offline_gateway}/v1", api_key="unused", max_retries=0)
    for _ in range(2):  # the second answer comes from the remembered failure, with the same message
        with pytest.raises(openai.BadRequestError) as err:
            emb.embed_documents(DOCS[:2])
        body = err.value.body
        assert isinstance(body, dict) and body["code"] == "token_encoding_unavailable" and body["param"] == "input"
        msg = body["message"]
        assert "'cl100k_base'" in msg and "TIKTOKEN_CACHE_DIR" in msg and "check_embedding_ctx_length=False" in msg
    # text still works on that gateway
    assert len(_reference(offline_gateway, ["xin chào"])[0]) == 384


def test_token_ids_outside_the_encoding_are_refused(inproc_gateway: str, fake_cl100k) -> None:
    with _sdk(inproc_gateway) as c, pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model=ALIAS, input=[[5, 6], [7, fake_cl100k.n_vocab + 10]])
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "input[1]"
    assert f"token id {fake_cl100k.n_vocab + 10} is not in the tiktoken encoding 'cl100k_base'" in body["message"]
    # one flat token array is one input, and its errors name `input`
    with _sdk(inproc_gateway) as c:
        ids = fake_cl100k.encode_ordinary("   ")
        with pytest.raises(openai.BadRequestError) as err:
            c.embeddings.create(model=ALIAS, input=ids)
        assert isinstance(err.value.body, dict) and err.value.body["param"] == "input"
        r = c.embeddings.create(model=ALIAS, input=fake_cl100k.encode_ordinary(DOCS[1]), encoding_format="float")
    np.testing.assert_allclose(np.asarray(r.data[0].embedding, np.float32), _reference(inproc_gateway, [DOCS[1]])[0],
                               atol=2e-6)


class _VienEmbeddings:
    """The README's recommended LangChain setup: documents embedded as documents, queries as queries."""

    @staticmethod
    def make(base_url: str) -> Any:
        from langchain_openai import OpenAIEmbeddings

        class VienEmbeddings(OpenAIEmbeddings):
            # LangChain's embed_query calls embed_documents: keep queries on the query side
            def embed_documents(self, texts: list[str], chunk_size: int | None = None, **kw: Any) -> list[list[float]]:
                return super().embed_documents(texts, chunk_size, extra_body={"vien_kind": "document"}, **kw)

            def embed_query(self, text: str, **kw: Any) -> list[float]:
                return super().embed_documents([text], **kw)[0]

        return VienEmbeddings(model=ALIAS, base_url=base_url, api_key="unused", max_retries=0,
                              check_embedding_ctx_length=False)


def test_langchain_vector_store_round_trip(http_addr: str) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings

    plain = OpenAIEmbeddings(model=ALIAS, base_url=f"http://{http_addr}/v1", api_key="unused", max_retries=0,
                             check_embedding_ctx_length=False)
    recommended = _VienEmbeddings.make(f"http://{http_addr}/v1")
    for emb in (plain, recommended):
        store = InMemoryVectorStore(embedding=emb)
        ids = store.add_texts(DOCS, metadatas=[{"i": i} for i in range(len(DOCS))])
        assert len(ids) == len(DOCS)
        for query, want in QUERIES:
            hits = store.similarity_search(query, k=2)
            assert hits[0].metadata["i"] == want, (type(emb).__name__, query, [h.page_content for h in hits])
    # the recommended one really embeds documents on the document side
    np.testing.assert_allclose(np.asarray(recommended.embed_documents(DOCS[:1]), np.float32),
                               _reference(http_addr, DOCS[:1], extra_body={"vien_kind": "document"}), atol=2e-6)
    np.testing.assert_allclose(np.asarray(recommended.embed_query(DOCS[0]), np.float32),
                               _reference(http_addr, DOCS[:1])[0], atol=2e-6)


# ---- LlamaIndex --------------------------------------------------------------------------------------------


def test_llamaindex_openai_embedding(http_addr: str) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    for dims in (None, 256):
        emb = OpenAIEmbedding(model=ALIAS, api_base=f"http://{http_addr}/v1", api_key="unused", max_retries=0,
                              dimensions=dims)
        docs = np.asarray(emb.get_text_embedding_batch(DOCS), np.float32)
        query = np.asarray(emb.get_query_embedding(QUERIES[1][0]), np.float32)
        extra = {"dimensions": dims} if dims else {}
        np.testing.assert_allclose(docs, _reference(http_addr, DOCS, **extra), atol=2e-6)
        np.testing.assert_allclose(query, _reference(http_addr, [QUERIES[1][0]], **extra)[0], atol=2e-6)
        assert docs.shape == (4, dims or 384)
        assert int(np.argmax(docs @ query)) == QUERIES[1][1]
    # the document alias: documents on the document side, for a second (indexing) instance
    emb_docs = OpenAIEmbedding(model_name=DOC_ALIAS, api_base=f"http://{http_addr}/v1", api_key="unused",
                               max_retries=0)
    np.testing.assert_allclose(np.asarray(emb_docs.get_text_embedding_batch(DOCS[:2]), np.float32),
                               _reference(http_addr, DOCS[:2], extra_body={"vien_kind": "document"}), atol=2e-6)


# ---- OpenAI-sized batches ----------------------------------------------------------------------------------


def _grpc(router: str, texts: list[str], **kw: Any) -> router_pb2.EmbedResponse:
    with grpc.insecure_channel(router) as ch:
        return router_pb2_grpc.RouterStub(ch).Embed(router_pb2.EmbedRequest(texts=texts, profile="e5-small", **kw),
                                                    timeout=120)


def test_2048_inputs_in_one_request_keep_order_and_one_usage(http_addr: str, mesh) -> None:
    texts = [f"câu hỏi số {i}: giá vé đi Huế" if i % 2 else f"question {i} about Hue" for i in range(2048)]
    with _sdk(http_addr) as c:
        r = c.embeddings.create(model=ALIAS, input=texts, encoding_format="float")
    assert [d.index for d in r.data] == list(range(2048))
    got = np.asarray([d.embedding for d in r.data], np.float32)
    tokens = 0
    for start in range(0, 2048, 256):  # the router's own limit per request
        resp = _grpc(mesh.router, texts[start:start + 256])
        tokens += sum(e.token_count for e in resp.embeddings)
        if start in (0, 256, 1792):
            want = np.asarray([np.frombuffer(e.vector, "<f4") for e in resp.embeddings])
            assert np.array_equal(got[start:start + 256], want)
    assert r.usage.prompt_tokens == r.usage.total_tokens == tokens


def test_an_error_in_a_later_batch_names_the_callers_index(http_addr: str) -> None:
    texts = ["ngắn"] * 300
    texts[290] = "word " * 700
    with _sdk(http_addr) as c, pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model=ALIAS, input=texts)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "input[290]" and body["code"] == "context_length_exceeded"
    assert body["message"].startswith("input[290]: ") and "limit of 512 tokens" in body["message"]


# ---- dense + sparse in one call ----------------------------------------------------------------------------


def test_sparse_beside_dense_over_http_and_grpc(http_addr: str, mesh) -> None:
    lexical = LexicalEncoder(load_config().profiles["e5-small"].lexical)
    with _sdk(http_addr) as c:
        q = c.embeddings.create(model=ALIAS, input=DOCS, extra_body={"vien_sparse": True})
        d = c.embeddings.create(model=DOC_ALIAS, input=DOCS, extra_body={"vien_sparse": True})
        plain = c.embeddings.create(model=ALIAS, input=DOCS[:1])
    assert "vien_sparse" not in (plain.data[0].model_extra or {})
    for kind, r, encode in (("query", q, lexical.query), ("document", d, lexical.document)):
        for item, text in zip(r.data, DOCS, strict=True):
            sv = (item.model_extra or {})["vien_sparse"]
            want = encode(text)
            assert sv["indices"] == want.indices, kind
            np.testing.assert_allclose(sv["values"], want.values, rtol=1e-6)
    resp = _grpc(mesh.router, DOCS[:2], kind=common_pb2.EMBED_KIND_DOCUMENT, sparse=True)
    for e, text in zip(resp.embeddings, DOCS[:2], strict=True):
        want = lexical.document(text)
        assert list(e.sparse.indices) == want.indices
        np.testing.assert_allclose(list(e.sparse.values), want.values, rtol=1e-6)
    assert not _grpc(mesh.router, DOCS[:1]).embeddings[0].HasField("sparse")


def test_dense_and_sparse_loaded_into_qdrant_hybrid_search(http_addr: str) -> None:
    """The example of docs: vien's dense + lexical vectors into a Qdrant collection (qdrant-client, local
    mode here; the same calls against a Qdrant server), then a hybrid query fused by Qdrant."""
    from qdrant_client import QdrantClient, models

    oai = _sdk(http_addr)

    def embed(texts: list[str], model: str) -> list[tuple[list[float], models.SparseVector]]:
        r = oai.embeddings.create(model=model, input=texts, encoding_format="float", extra_body={"vien_sparse": True})
        return [(d.embedding, models.SparseVector(**(d.model_extra or {})["vien_sparse"])) for d in r.data]

    qdrant = QdrantClient(":memory:")
    qdrant.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=384, distance=models.Distance.COSINE)},
        # vien's lexical weights leave IDF to the engine: the IDF modifier completes BM25
        sparse_vectors_config={"lexical": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    qdrant.upsert("docs", [models.PointStruct(id=i, vector={"dense": dense, "lexical": sparse}, payload={"text": t})
                           for i, (t, (dense, sparse)) in enumerate(zip(DOCS, embed(DOCS, DOC_ALIAS), strict=True))])
    # an unaccented Vietnamese query too: the lexical side matches its folded terms
    for query, want in [*QUERIES, ("ca phe sua da Sai Gon", 3)]:
        (dense, sparse), = embed([query], ALIAS)
        hits = qdrant.query_points(
            "docs",
            prefetch=[models.Prefetch(query=dense, using="dense", limit=20),
                      models.Prefetch(query=sparse, using="lexical", limit=20)],
            query=models.FusionQuery(fusion=models.Fusion.RRF), limit=3,
        ).points
        assert hits[0].id == want, (query, [h.payload for h in hits])
        lexical_only = qdrant.query_points("docs", query=sparse, using="lexical", limit=1).points
        if query != "when does the Hue museum open":  # every query shares words with its document
            assert lexical_only and lexical_only[0].id == want
    oai.close()
    qdrant.close()
