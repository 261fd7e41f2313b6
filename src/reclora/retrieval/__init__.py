"""Long-short modality retriever: item text embeddings and top-K relevant history per sample."""

from reclora.retrieval.embeddings import item_texts, load_or_embed_items
from reclora.retrieval.retriever import RETRIEVED_COLUMNS, retrieve

__all__ = ["RETRIEVED_COLUMNS", "item_texts", "load_or_embed_items", "retrieve"]
