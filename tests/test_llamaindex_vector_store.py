"""MemOSVectorStore and MemOSRetriever against LlamaIndex's SimpleVectorStore (differential),
plus what only MemOS does: upserts by node id, hybrid search with real rank fusion."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from memos_integrations import FilterError, InvalidInput, MemOS
from memos_integrations.llama_index import MemOSEmbedding, MemOSRetriever, MemOSVectorStore

# (node id, source document, text, metadata)
CORPUS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "n1",
        "doc-a",
        "Lisbon is the sunny capital of Portugal",
        {"topic": "travel", "year": 2019, "rating": 4.5, "author": "ana"},
    ),
    (
        "n2",
        "doc-a",
        "Porto is famous for its port wine cellars",
        {"topic": "travel", "year": 2021, "rating": 4.0},
    ),
    (
        "n3",
        "doc-a",
        "The Tagus river flows through Lisbon",
        {"topic": "geography", "year": 2020, "rating": 3.0, "author": ""},
    ),
    (
        "n4",
        "doc-b",
        "Python is a popular programming language",
        {"topic": "tech", "year": 2022, "rating": 5.0, "author": "guido"},
    ),
    (
        "n5",
        "doc-b",
        "Rust guarantees memory safety with a borrow checker",
        {"topic": "tech", "year": 2023, "rating": 4.8},
    ),
    (
        "n6",
        "doc-b",
        "SQLite is an embedded relational database",
        {"topic": "tech", "year": 2018, "rating": 4.2, "author": "richard"},
    ),
    (
        "n7",
        "doc-c",
        "Sourdough bread needs a long fermentation",
        {"topic": "food", "year": 2020, "rating": 3.5},
    ),
    (
        "n8",
        "doc-c",
        "Pasteis de nata are custard tarts from Belem",
        {"topic": "food", "year": 2021, "rating": 4.9, "author": "ana"},
    ),
    (
        "n9",
        "doc-c",
        "Espresso is brewed by forcing hot water through coffee",
        {"topic": "food", "year": 2017, "rating": 4.1},
    ),
    (
        "n10",
        "doc-d",
        "The Alps are the highest mountains in Europe",
        {"topic": "geography", "year": 2016, "rating": 3.9},
    ),
    (
        "n11",
        "doc-d",
        "Volcanoes form where tectonic plates meet",
        {"topic": "geography", "year": 2015, "rating": 3.2, "author": "maria"},
    ),
    (
        "n12",
        "doc-d",
        "Vector databases index embeddings for similarity search",
        {"topic": "tech", "year": 2024, "rating": 4.6},
    ),
]
QUERIES = [
    "Where can I drink wine in Portugal?",
    "memory-safe systems programming",
    "baking bread at home",
    "mountains and volcanoes",
]


def F(key: str, value: Any, op: str = "==") -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=FilterOperator(op))


FILTERS: list[MetadataFilters | None] = [
    None,
    MetadataFilters(filters=[F("topic", "travel")]),
    MetadataFilters(filters=[F("topic", "tech", "!=")]),
    MetadataFilters(filters=[F("year", 2020, ">")]),
    MetadataFilters(filters=[F("year", 2020, ">=")]),
    MetadataFilters(filters=[F("rating", 4.0, "<")]),
    MetadataFilters(filters=[F("rating", 4.0, "<=")]),
    MetadataFilters(filters=[F("topic", ["food", "geography"], "in")]),
    MetadataFilters(filters=[F("author", ["ana", "guido"], "nin")]),
    MetadataFilters(filters=[F("author", None, "is_empty")]),
    MetadataFilters(filters=[F("doc_id", "doc-b")]),
    MetadataFilters(
        filters=[F("topic", "food"), F("year", 2020, ">=")], condition=FilterCondition.AND
    ),
    MetadataFilters(
        filters=[F("topic", "food"), F("rating", 4.5, ">")], condition=FilterCondition.OR
    ),
    MetadataFilters(
        filters=[F("topic", "tech"), F("topic", "food")], condition=FilterCondition.NOT
    ),
]


def nodes(vectors: list[list[float]] | None = None) -> list[TextNode]:
    out = []
    for n, (node_id, doc, text, meta) in enumerate(CORPUS):
        out.append(
            TextNode(
                id_=node_id,
                text=text,
                metadata=dict(meta),
                # both stores embed the text alone (MemOS embeds what it stores: the text)
                excluded_embed_metadata_keys=list(meta),
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)},
                embedding=None if vectors is None else vectors[n],
            )
        )
    return out


class Pair:
    """The same nodes in a MemOSVectorStore and a SimpleVectorStore (embedded once)."""

    def __init__(self, mos: MemOS) -> None:
        self.embed = MemOSEmbedding(mos=mos)
        self.ours, self.reference = MemOSVectorStore(mos=mos, user_id="alice"), SimpleVectorStore()
        vectors = self.embed.get_text_embedding_batch([c[2] for c in CORPUS])
        assert self.ours.add(nodes()) == self.reference.add(nodes(vectors))
        self._queries: dict[str, list[float]] = {}

    def answers(self, store: Any, filters: MetadataFilters | None, k: int, queries=QUERIES):
        out = []
        for q in queries:
            if q not in self._queries:
                self._queries[q] = self.embed.get_query_embedding(q)
            result = store.query(
                VectorStoreQuery(
                    query_str=q,
                    query_embedding=self._queries[q],
                    similarity_top_k=k,
                    filters=filters,
                )
            )
            out.append((result.ids, [round(s, 5) for s in result.similarities]))
        return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, embedder):
    """One populated pair for the read-only tests (queries do not change rankings)."""
    mos = MemOS.open(tmp_path_factory.mktemp("vs") / "memos.db", embedder=embedder)
    mos.create_user("alice")
    yield Pair(mos)
    mos.close()


@pytest.fixture
def pair(mos: MemOS) -> Pair:
    return Pair(mos)


def test_queries_match_simple_vector_store(shared: Pair) -> None:
    for k in (1, 3):
        assert shared.answers(shared.ours, None, k) == shared.answers(shared.reference, None, k)
    for filters in FILTERS:  # k=12 returns every match, ranked: one query per filter is enough
        expected = shared.answers(shared.reference, filters, 12, QUERIES[:1])
        assert shared.answers(shared.ours, filters, 12, QUERIES[:1]) == expected, filters
        assert any(ids for ids, _ in expected)


def test_nested_filters(shared: Pair) -> None:
    """SimpleVectorStore rejects nested filters; the expected rows are worked out here."""
    nested = MetadataFilters(
        filters=[
            F("year", 2018, ">="),
            MetadataFilters(
                filters=[F("topic", "travel"), F("author", "richard")], condition=FilterCondition.OR
            ),
        ]
    )
    matching = {
        node_id
        for node_id, _, _, m in CORPUS
        if m["year"] >= 2018 and (m["topic"] == "travel" or m.get("author") == "richard")
    }
    assert matching == {"n1", "n2", "n6"}
    unfiltered = shared.answers(shared.reference, None, 12)
    got = shared.answers(shared.ours, nested, 12)
    for (ids, sims), (all_ids, all_sims) in zip(got, unfiltered, strict=True):
        keep = [i for i, node_id in enumerate(all_ids) if node_id in matching]
        assert (ids, sims) == ([all_ids[i] for i in keep], [all_sims[i] for i in keep])


def test_deletes_and_clear_match_simple_vector_store(pair: Pair) -> None:
    ours, reference = pair.ours, pair.reference
    steps = [
        lambda s: s.delete("doc-b"),
        lambda s: s.delete("no-such-doc"),
        lambda s: s.delete_nodes(["n1", "n7", "nope"]),
        lambda s: s.delete_nodes(filters=MetadataFilters(filters=[F("year", 2016, "<=")])),
        lambda s: s.delete_nodes(["n2", "n3"], MetadataFilters(filters=[F("topic", "travel")])),
    ]
    for step in steps:
        step(ours)
        step(reference)
        assert pair.answers(ours, None, 12, QUERIES[:1]) == pair.answers(
            reference, None, 12, QUERIES[:1]
        )
    assert sorted(n.node_id for n in ours.get_nodes()) == ["n12", "n3", "n8", "n9"]
    ours.clear()
    reference.clear()
    assert pair.answers(ours, None, 12, QUERIES[:1]) == [([], [])]
    assert pair.answers(reference, None, 12, QUERIES[:1]) == [([], [])]
    assert ours.get_nodes() == []


def test_index_retrievers_match_simple_vector_store(mos: MemOS) -> None:
    embed = MemOSEmbedding(mos=mos)
    docs = [Document(text=text, id_=node_id) for node_id, _, text, _ in CORPUS]
    ours = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(
            vector_store=MemOSVectorStore(mos=mos, user_id="alice")
        ),
        embed_model=embed,
    )
    reference = VectorStoreIndex.from_documents(docs, embed_model=embed)
    memories = MemOSRetriever(mos, "alice", similarity_top_k=3, mode="dense", kinds=["node"])
    for q in QUERIES[1:3]:
        expected = [
            (n.node.ref_doc_id, round(n.score or 0, 5))
            for n in reference.as_retriever(similarity_top_k=3).retrieve(q)
        ]
        for retriever in (ours.as_retriever(similarity_top_k=3), memories):
            got = [(n.node.ref_doc_id, round(n.score or 0, 5)) for n in retriever.retrieve(q)]
            assert got == expected


def test_nodes_round_trip_and_add_is_an_upsert(mos: MemOS, pair: Pair) -> None:
    ours = pair.ours
    original = nodes()
    assert [n.model_dump() for n in ours.get_nodes(["n5", "n1", "missing"])] == [
        original[4].model_dump(),
        original[0].model_dump(),
    ]
    assert ours.get_nodes(filters=MetadataFilters(filters=[F("author", "ana")])) == [
        original[0],
        original[7],
    ]
    before = mos.count(user="alice")
    ours.add(nodes()[:3])  # unchanged: nothing written
    changed = TextNode(id_="n1", text="Lisbon is the windy capital of Portugal")
    twice = TextNode(id_="n2", text="first draft")
    ours.add([changed, twice, TextNode(id_="n2", text="Porto sits on the Douro river")])
    assert mos.count(user="alice") == before
    [n1, n2] = ours.get_nodes(["n1", "n2"])
    assert (n1.get_content(), n2.get_content()) == (changed.text, "Porto sits on the Douro river")
    item = mos.list(user="alice", filter={"key": "n1"})[0]
    assert item.version == 2 and len(mos.history(item.id, user="alice")) == 2
    with pytest.raises(InvalidInput, match="no text"):
        ours.add([TextNode(id_="empty", text="  ")])


def test_hybrid_scores_are_reciprocal_rank_fusion_of_both_legs(shared: Pair) -> None:
    ours = shared.ours
    q = "Lisbon river and Portugal wine"

    def ranked(mode: VectorStoreQueryMode, **kw: Any) -> tuple[list[str], list[float]]:
        result = ours.query(VectorStoreQuery(query_str=q, similarity_top_k=12, mode=mode, **kw))
        return list(result.ids or []), list(result.similarities or [])

    dense, _ = ranked(VectorStoreQueryMode.DEFAULT)
    text, _ = ranked(VectorStoreQueryMode.TEXT_SEARCH)
    assert 0 < len(text) < len(dense)  # the full-text leg only finds the matching words
    for alpha, weight in ((None, ours.mos.settings.dense_weight), (0.5, 1.0), (0.2, 0.25)):
        ids, scores = ranked(VectorStoreQueryMode.HYBRID, alpha=alpha)
        expected = {
            d: weight / (60 + dense.index(d) + 1)
            + (1 / (60 + text.index(d) + 1) if d in text else 0.0)
            for d in dense
        }
        assert ids == sorted(expected, key=lambda d: (-expected[d], dense.index(d)))
        assert scores == pytest.approx([expected[d] for d in ids], rel=1e-9)
    assert ranked(VectorStoreQueryMode.HYBRID, alpha=1.0)[0] == dense
    assert ranked(VectorStoreQueryMode.HYBRID, alpha=0.0)[0] == text
    assert ranked(VectorStoreQueryMode.SPARSE)[0] == text


def test_queries_are_restricted_by_node_and_document_ids(shared: Pair) -> None:
    ours = shared.ours
    q = "Portugal"
    by_doc = ours.query(VectorStoreQuery(query_str=q, similarity_top_k=12, doc_ids=["doc-c"]))
    assert sorted(by_doc.ids or []) == ["n7", "n8", "n9"]
    by_id = ours.query(VectorStoreQuery(query_str=q, similarity_top_k=12, node_ids=["n4", "n9"]))
    assert sorted(by_id.ids or []) == ["n4", "n9"]


def test_what_is_not_supported_says_so(shared: Pair) -> None:
    ours, embed = shared.ours, shared.embed
    with pytest.raises(InvalidInput, match="mmr"):
        ours.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.MMR))
    with pytest.raises(InvalidInput, match="query_str"):
        ours.query(VectorStoreQuery(query_embedding=embed.get_query_embedding("x")))
    with pytest.raises(InvalidInput, match="alpha"):
        ours.query(VectorStoreQuery(query_str="x", mode="hybrid", alpha=1.5))
    for op, value in (("contains", "a"), ("any", ["a"]), ("all", ["a"]), ("text_match", "a")):
        with pytest.raises(FilterError, match=op):
            ours.query(
                VectorStoreQuery(
                    query_str="x", filters=MetadataFilters(filters=[F("t", value, op)])
                )
            )


def test_async_methods_match_the_sync_ones(mos: MemOS) -> None:
    store = MemOSVectorStore(mos=mos, user_id="alice")
    query = VectorStoreQuery(query_str="programming", similarity_top_k=3)

    async def run() -> None:
        assert await store.async_add(nodes()) == [c[0] for c in CORPUS]
        assert (await store.aquery(query)).ids == store.query(query).ids
        assert await store.aget_nodes(["n4"]) == store.get_nodes(["n4"])
        await store.adelete("doc-a")
        await store.adelete_nodes(["n4"])
        assert len(await store.aget_nodes()) == len(CORPUS) - 4
        retriever = MemOSRetriever(mos, "alice", similarity_top_k=2)
        assert [n.node.node_id for n in await retriever.aretrieve("coffee")] == [
            n.node.node_id for n in retriever.retrieve("coffee")
        ]
        await store.aclear()
        assert await store.aget_nodes() == []

    asyncio.run(run())


def test_store_serialises_by_url(mos: MemOS) -> None:
    store = MemOSVectorStore(mos=mos, user_id="alice")
    data = store.to_dict()
    assert data["store_url"] == mos.store.url and data["class_name"] == "MemOSVectorStore"
    assert MemOSVectorStore.from_dict(data).client is mos
