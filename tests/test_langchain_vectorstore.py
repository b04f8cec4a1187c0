"""MemOSVectorStore and MemOSRetriever beyond the standard suites: filters, MMR, scores,
users, versions, and the run-config user."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from memos_integrations import FilterError, InvalidInput, MemOS
from memos_integrations.langchain import MemOSEmbeddings, MemOSRetriever
from memos_integrations.langchain.vectorstore import MemOSVectorStore

DOCS = [
    Document("Alice moved to Lisbon in 2024", metadata={"src": "chat", "page": 1}, id="d1"),
    Document("Alice moved to Lisbon last year", metadata={"src": "chat", "page": 2}, id="d2"),
    Document("Alice's dog is called Pixel", metadata={"src": "notes", "page": 3}, id="d3"),
    Document("Bob plays the cello", metadata={"src": "notes", "page": 4, "x": {"y": 1}}, id="d4"),
]


@pytest.fixture
def vs(mos) -> MemOSVectorStore:
    store = MemOSVectorStore(mos, user="alice")
    store.add_documents(DOCS)
    return store


def test_documents_round_trip_without_system_fields(vs, mos) -> None:
    assert sorted(vs.get_by_ids(["d4", "d1", "nope"]), key=lambda d: d.id) == [DOCS[0], DOCS[3]]
    vs.add_documents([Document("Alice moved to Porto", metadata={"src": "fix"}, id="d1")])
    [doc] = vs.get_by_ids(["d1"])
    assert doc == Document("Alice moved to Porto", metadata={"src": "fix"}, id="d1")
    [item] = mos.list(user="alice", filter={"key": "d1"})
    assert item.kind == "document" and item.version == 2  # the old text is in the history
    assert mos.history(item.id, user="alice")[0].text == DOCS[0].page_content


def test_metadata_filters(vs) -> None:
    def ids(**kw) -> list[str]:
        return sorted(d.id for d in vs.similarity_search("Alice", k=10, **kw))

    assert ids(filter={"src": "notes"}) == ["d3", "d4"]
    assert ids(filter={"page": {"$gte": 2}, "src": {"$ne": "notes"}}) == ["d2"]
    assert ids(filter={"$or": [{"page": 1}, {"x.y": 1}]}) == ["d1", "d4"]
    assert ids(filter={"src": {"$in": ["chat"]}, "$not": {"page": 2}}) == ["d1"]
    with pytest.raises(FilterError):
        vs.similarity_search("x", filter={"page": {"$regex": "1"}})
    with pytest.raises(InvalidInput, match="logical operator"):
        vs.similarity_search("x", filter={"$nor": []})


def test_scores_relevance_and_mmr(vs) -> None:
    [(doc, score)] = vs.similarity_search_with_score("Where does Alice live?", k=1)
    assert doc.id in ("d1", "d2") and 0.3 < score <= 1.0  # a cosine similarity
    [(_, relevance)] = vs.similarity_search_with_relevance_scores("Where does Alice live?", k=1)
    assert relevance == pytest.approx((1 + score) / 2)
    # the two Lisbon documents are near-duplicates: MMR keeps one and adds something else
    plain = [d.id for d in vs.similarity_search("Alice Lisbon", k=2)]
    diverse = [d.id for d in vs.max_marginal_relevance_search("Alice Lisbon", k=2, fetch_k=4)]
    assert sorted(plain) == ["d1", "d2"]
    assert diverse[0] in ("d1", "d2") and diverse[1] not in ("d1", "d2")
    hybrid = MemOSVectorStore(vs.mos, user="alice", search_mode="hybrid")
    assert hybrid.similarity_search("Pixel", k=1)[0].id == "d3"
    with pytest.raises(InvalidInput, match="dense"):
        hybrid.similarity_search_with_relevance_scores("Pixel", k=1)


def test_users_do_not_share_documents(vs, mos) -> None:
    bob = MemOSVectorStore(mos, user="bob")
    assert bob.get_by_ids(["d1"]) == []
    assert bob.similarity_search("Alice", k=5) == []
    bob.add_texts(["Bob's own note"], ids=["d1"])  # the same id in another cube
    assert vs.get_by_ids(["d1"])[0].page_content == DOCS[0].page_content
    bob.delete(None)  # everything of bob's, nothing of alice's
    assert bob.similarity_search("note", k=5) == [] and len(vs.get_by_ids(["d1", "d2"])) == 2


def test_add_texts_checks_its_arguments(vs) -> None:
    with pytest.raises(InvalidInput, match="metadatas"):
        vs.add_texts(["a", "b"], metadatas=[{}])
    with pytest.raises(InvalidInput, match="twice"):
        vs.add_texts(["a", "b"], ids=["same", "same"])
    with pytest.raises(InvalidInput, match="empty"):
        vs.add_texts([" "])
    assert vs.get_by_ids(["same"]) == []


def test_from_texts(tmp_path, embedder) -> None:
    emb = MemOSEmbeddings(embedder)
    vs = MemOSVectorStore.from_texts(
        ["one fish", "two fish"],
        emb,
        [{"n": 1}, {"n": 2}],
        ids=["a", "b"],
        path=tmp_path / "ft.db",
        user="carol",
    )
    assert vs.similarity_search("fish", k=2, filter={"n": 2})[0].id == "b"
    assert vs.embeddings.embed_query("fish") == emb.embed_query("fish")
    with pytest.raises(InvalidInput, match="embeds"):
        MemOSVectorStore.from_texts(["x"], _OtherEmbeddings(), mos=vs.mos)
    vs.mos.close()
    reopened = MemOS.open(tmp_path / "ft.db", embedder=embedder)
    assert MemOSVectorStore(reopened, user="carol").get_by_ids(["a"])[0].page_content == "one fish"
    reopened.close()


class _OtherEmbeddings(MemOSEmbeddings):
    model_id = "someone-else/model"  # type: ignore[assignment]


def test_retriever_scores_filters_and_users(vs, mos) -> None:
    retriever = MemOSRetriever(mos=mos, user="alice", k=2)
    docs = retriever.invoke("Pixel the dog")
    assert docs[0].page_content == "Alice's dog is called Pixel"
    assert docs[0].metadata == {
        "src": "notes",
        "page": 3,
        "score": pytest.approx(docs[0].metadata["score"]),
    }
    assert docs[0].metadata["score"] > docs[1].metadata["score"]
    dense = MemOSRetriever(mos=mos, user="alice", search_type="dense", k=1)
    [top] = dense.invoke("Alice's pet")
    assert 0.3 < top.metadata["score"] <= 1.0  # cosine for dense search
    notes = retriever.invoke("Alice", filter={"metadata.src": "notes"}, k=5)
    assert {d.page_content for d in notes} == {DOCS[2].page_content, DOCS[3].page_content}
    assert MemOSRetriever(mos=mos, user="bob").invoke("Alice") == []
    clash = MemOSRetriever(mos=mos, user="alice", score_key="page")
    with pytest.raises(InvalidInput, match="score_key"):
        clash.invoke("Pixel")


def test_retriever_takes_the_user_from_the_run_config(vs, mos) -> None:
    retriever = MemOSRetriever(mos=mos, k=1)
    with pytest.raises(InvalidInput, match="needs a user"):
        retriever.invoke("Pixel")
    chain = RunnableLambda(lambda q: retriever.invoke(q))
    [doc] = chain.invoke("Pixel", config={"configurable": {"user_id": "alice"}})
    assert doc.page_content == DOCS[2].page_content
    assert chain.invoke("Pixel", config={"configurable": {"user_id": "bob"}}) == []
    [adoc] = asyncio.run(retriever.ainvoke("Pixel", config={"configurable": {"user_id": "alice"}}))
    assert adoc == doc
