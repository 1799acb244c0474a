"""Embeddings on disk and FAISS search: the catalogue index and the evaluation's search.

Torch-free (numpy + faiss), so that serving can read the index it serves.
"""
