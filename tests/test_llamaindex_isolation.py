"""Two users never see each other's memories through any LlamaIndex adapter."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

from memos_integrations import MemOS, NotFound, PermissionDenied
from memos_integrations.llama_index import (
    MemOSChatStore,
    MemOSMemory,
    MemOSMemoryBlock,
    MemOSRetriever,
    MemOSVectorStore,
)

SECRET = "My safe code is 4812 and it opens the blue safe"


def everything_bob_can_see(mos: MemOS, query: str) -> str:
    """What every adapter acting for bob returns for ``query``, as one text."""
    memory = MemOSMemory.from_defaults(mos=mos, user_id="bob", session_id="shared")
    store = MemOSVectorStore(mos=mos, user_id="bob")
    chat = MemOSChatStore(mos=mos, user_id="bob")
    block = MemOSMemoryBlock(mos=mos, user_id="bob")

    async def gather() -> list[str]:
        return [
            *(m.content or "" for m in await chat.get_messages("shared", status=None)),
            *await chat.get_keys(),
            await block.aget([ChatMessage(role=MessageRole.USER, content=query)]),
        ]

    seen = [
        *(m.content or "" for m in memory.get(input=query)),
        *(m.content or "" for m in memory.get_all()),
        *(n.get_content() for n in store.get_nodes()),
        *(
            n.get_content()
            for n in store.query(VectorStoreQuery(query_str=query, similarity_top_k=50)).nodes or []
        ),
        *(
            n.node.get_content()
            for n in MemOSRetriever(mos, "bob", similarity_top_k=50).retrieve(query)
        ),
        *asyncio.run(gather()),
    ]
    return "\n".join(seen)


def test_same_session_ids_and_node_ids_stay_apart(mos: MemOS) -> None:
    alice = MemOSMemory.from_defaults(mos=mos, user_id="alice", session_id="shared")
    alice.put(ChatMessage(role=MessageRole.USER, content=SECRET))
    MemOSVectorStore(mos=mos, user_id="alice").add([TextNode(id_="n1", text=SECRET)])
    mos.add(SECRET + " (a fact)", user="alice")

    bob_store = MemOSVectorStore(mos=mos, user_id="bob")
    bob_store.add([TextNode(id_="n1", text="Bob's own note about gardening")])  # same node id
    MemOSMemory.from_defaults(mos=mos, user_id="bob", session_id="shared").put(
        ChatMessage(role=MessageRole.USER, content="bob says hi")
    )

    seen = everything_bob_can_see(mos, "what is the safe code?")
    assert "4812" not in seen
    assert "gardening" in seen and "bob says hi" in seen  # bob's adapters do work
    # and alice's node n1 was not overwritten by bob's
    [node] = MemOSVectorStore(mos=mos, user_id="alice").get_nodes(["n1"])
    assert node.get_content() == SECRET


def test_shared_cubes_need_a_grant(mos: MemOS) -> None:
    MemOSVectorStore(mos=mos, user_id="alice", cube_id="alice-personal").add(
        [TextNode(id_="n1", text=SECRET)]
    )
    with pytest.raises(PermissionDenied, match="no grant"):
        MemOSVectorStore(mos=mos, user_id="bob", cube_id="alice-personal").get_nodes()
    with pytest.raises(NotFound):
        MemOSRetriever(mos, "bob", cube_ids=["alice-personal"]).retrieve("safe code")

    mos.grant("alice-personal", to="bob", access="read", by="alice")
    hits = MemOSRetriever(mos, "bob", cube_ids=["alice-personal"]).retrieve("safe code")
    assert SECRET in [h.node.get_content() for h in hits]
    reader = MemOSVectorStore(mos=mos, user_id="bob", cube_id="alice-personal")
    assert [n.get_content() for n in reader.get_nodes()] == [SECRET]
    with pytest.raises(PermissionDenied):
        reader.add([TextNode(id_="n2", text="bob tries to write here")])
    with pytest.raises(PermissionDenied):
        reader.clear()
    assert [n.node_id for n in reader.get_nodes()] == ["n1"]
