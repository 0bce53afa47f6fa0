"""Retrieval: sparse, dense, fusion and reranking."""
