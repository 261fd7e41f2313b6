"""Long-short modality retriever: item text embeddings and top-K relevant history per sample."""

from reclora.retrieval.embeddings import embedding_cache_key, item_texts, load_or_embed_items
from reclora.retrieval.retriever import (
    POSITION_COLUMNS,
    RETRIEVED_COLUMNS,
    materialize_retrieved,
    retrieve,
    retrieve_positions,
)

__all__ = [
    "POSITION_COLUMNS",
    "RETRIEVED_COLUMNS",
    "embedding_cache_key",
    "item_texts",
    "load_or_embed_items",
    "materialize_retrieved",
    "retrieve",
    "retrieve_positions",
]
