"""Representations: per-atom features -> rotation invariants -> pooled per-structure vectors, cached.

`extract` batches structures through a model adapter, `invariants` turns L>0 irreps into invariants and pools
over real atoms, `cache` keeps the results on disk (content-addressed, resumable, checksummed).

Stage: representations (stage 3 of 5).
"""
