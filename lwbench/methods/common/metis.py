"""METIS k-way partitions of the user-item graph, seeded and cached on disk (docs/protocol.md §7.2, §8.4).

LEGCF and C2F place every entity in a METIS part to initialise their assignments. The official
code calls ``dgl.metis_partition_assignment(g, k)`` (k-way, edge-cut objective, no edge or vertex
weights) on the N-node user-item graph; here the same METIS call is made through pymetis. METIS is
deterministic for a given seed (``METIS_OPTION_SEED``), so a partition is a pure function of
(graph, number of parts, seed) and is cached under that key: a run that is resumed, or a second
method on the same data (C2F's coarse and fine stages), does not partition again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pymetis
import scipy.sparse as sp

from lwbench.files import cached_array

CACHE_FORMAT = "kway-cut-v1"   # part of the cache key: change it when the METIS call changes


def user_item_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """The symmetric, unweighted N x N graph ``[[0, R], [R^T, 0]]`` without self loops, with sorted
    column indices (the METIS input of docs/protocol.md §7.2 step 1; items are offset by ``|U|``)."""
    pattern = sp.csr_matrix((np.ones(train.nnz, dtype=np.int8), train.indices, train.indptr), shape=train.shape)
    adjacency = sp.bmat([[None, pattern], [pattern.T, None]], format="csr")
    adjacency.sum_duplicates()
    adjacency.sort_indices()
    return adjacency


def graph_fingerprint(adjacency: sp.csr_matrix) -> str:
    """sha256 of the sparsity pattern (node count, row pointers, sorted column indices)."""
    canonical = adjacency.copy()
    canonical.sort_indices()
    digest = hashlib.sha256()
    digest.update(np.int64(canonical.shape[0]).tobytes())
    digest.update(canonical.indptr.astype(np.int64).tobytes())
    digest.update(canonical.indices.astype(np.int64).tobytes())
    return digest.hexdigest()


def metis_parts(adjacency: sp.csr_matrix, n_parts: int, seed: int, cache_dir: Path | None = None) -> np.ndarray:
    """Part of every node (``int64``, values in ``[0, n_parts)``) of a k-way METIS partition.

    ``adjacency`` must be symmetric without self loops (e.g. :func:`user_item_adjacency`); its values
    are ignored (unweighted, as in the official code). With ``cache_dir`` the result is stored as
    ``cache_dir/metis/<fingerprint>-k<parts>-s<seed>.npy`` and loaded on the next call. METIS may leave
    some parts empty when ``n_parts`` is close to the number of nodes.
    """
    n_nodes = adjacency.shape[0]
    if adjacency.shape != (n_nodes, n_nodes):
        raise ValueError(f"METIS needs a square adjacency matrix, got shape {adjacency.shape}")
    if not 1 <= n_parts <= n_nodes:
        raise ValueError(f"cannot partition a graph of {n_nodes} nodes into {n_parts} parts; "
                         f"choose between 1 and {n_nodes} parts")
    path = None
    if cache_dir is not None:
        key = f"{graph_fingerprint(adjacency)[:24]}-k{n_parts}-s{seed}-{CACHE_FORMAT}"
        path = Path(cache_dir) / "metis" / f"{key}.npy"
    return cached_array(path, lambda: _partition(adjacency, n_parts, seed),
                        usable=lambda parts: parts.shape == (n_nodes,))


def _partition(adjacency: sp.csr_matrix, n_parts: int, seed: int) -> np.ndarray:
    n_nodes = adjacency.shape[0]
    if n_parts == 1:
        return np.zeros(n_nodes, dtype=np.int64)
    if (adjacency.diagonal() != 0).any():
        raise ValueError("the METIS graph must not have self loops")
    if (adjacency != adjacency.T).nnz:
        raise ValueError("the METIS graph must be symmetric (store both directions of every edge)")
    graph = pymetis.CSRAdjacency(adjacency.indptr.astype(np.int64), adjacency.indices.astype(np.int64))
    # recursive=False: k-way partitioning as dgl.metis_partition_assignment (pymetis would switch to
    # recursive bisection for k <= 8). METIS seeds are C ints.
    _, parts = pymetis.part_graph(n_parts, graph, recursive=False, options=pymetis.Options(seed=seed % 2**31))
    return np.asarray(parts, dtype=np.int64)
