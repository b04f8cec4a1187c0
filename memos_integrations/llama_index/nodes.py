"""LlamaIndex nodes as MemOS memories, and memories as nodes.

A node is stored keyed by its node id, with its text as the memory's text and, in the
metadata, what LlamaIndex vector stores keep (``node_to_metadata_dict``): the node's own
metadata at the top level (so metadata filters reach it), ``ref_doc_id``/``doc_id``/
``document_id``, and the rest of the node as JSON, so the same node class comes back.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ..core.errors import InvalidInput
from ..core.items import MemoryItem, SearchHit
from .messages import MESSAGE_FIELD

NODE_KIND = "node"
_NODE_JSON = "_node_content"
# system fields a memory that is not a node shows as node metadata, hidden from the LLM
_MEMORY_FIELDS = ("memory_id", "kind", "cube_id", "session_id", "event_time", "created_at")


def to_memory(node: BaseNode) -> dict[str, Any]:
    """The dict to pass to ``mos.add`` for a node (its embedding is not used: MemOS embeds)."""
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    if not text.strip():
        raise InvalidInput(
            f"node {node.node_id!r} has no text; MemOSVectorStore stores text nodes only"
        )
    return {
        "text": text,
        "kind": NODE_KIND,
        "key": node.node_id,
        "metadata": node_to_metadata_dict(node, remove_text=True, flat_metadata=False),
    }


def to_node(item: MemoryItem) -> BaseNode:
    """The node an item holds; any other memory becomes a ``TextNode`` with its item id."""
    if isinstance(item.metadata.get(_NODE_JSON), str):
        return metadata_dict_to_node(item.metadata, text=item.text)
    when = item.event_time or item.created_at
    system = {
        "memory_id": item.id,
        "kind": item.kind,
        "cube_id": item.cube_id,
        "session_id": item.provenance.session_id,
        "event_time": when.isoformat(),
        "created_at": item.created_at.isoformat(),
    }
    own = {k: v for k, v in item.metadata.items() if k != MESSAGE_FIELD}
    return TextNode(
        id_=item.id,
        text=item.text,
        metadata={**own, **system},
        excluded_llm_metadata_keys=[k for k in _MEMORY_FIELDS if k != "event_time"],
        excluded_embed_metadata_keys=list(_MEMORY_FIELDS),
    )


def node_id(item: MemoryItem) -> str:
    """The id a node of this item has (its key for stored nodes)."""
    return item.key if isinstance(item.metadata.get(_NODE_JSON), str) and item.key else item.id


def score_of(hit: SearchHit, mode: str) -> float:
    """A dense search scores by cosine similarity (as LlamaIndex's vector stores do); the
    others by the fused reciprocal-rank score (higher is better)."""
    if mode == "dense" and hit.dense_score is not None:
        return hit.dense_score
    return hit.score
