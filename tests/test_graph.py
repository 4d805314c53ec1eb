"""Normalized adjacency and the symmetric sparse product used for propagation."""
import numpy as np
import scipy.sparse as sp
import torch

from lwbench.kernels.graph import lightgcn_propagate, normalized_adjacency, sparse_times_dense


def dense_normalized(train):
    n_users, n_items = train.shape
    a = np.zeros((n_users + n_items,) * 2)
    r = train.toarray()
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    degree = a.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_dense_formula(toy):
    graph = normalized_adjacency(toy.train)
    assert np.allclose(graph.matrix.to_dense().numpy(), dense_normalized(toy.train), atol=1e-6)


def test_isolated_nodes_get_zero_rows():
    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    dense = normalized_adjacency(train).matrix.to_dense().numpy()
    assert np.allclose(dense[1], 0) and np.allclose(dense[:, 4], 0)
    assert dense[0, 2] == 1.0


def test_propagation_and_its_gradient_match_dense(toy):
    graph = normalized_adjacency(toy.train)
    dense = torch.tensor(dense_normalized(toy.train), dtype=torch.float32)
    x = torch.randn(graph.n_nodes, 8, requires_grad=True)
    y = torch.randn(graph.n_nodes, 8)
    (lightgcn_propagate(graph, x, 3) * y).sum().backward()
    grad_sparse = x.grad.clone()
    x.grad = None
    layers = [x]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    (torch.stack(layers).mean(0) * y).sum().backward()
    assert torch.allclose(grad_sparse, x.grad, atol=1e-5)


def test_sparse_times_dense_gives_the_bits_of_the_plain_product():
    """The propagation kernel is a faster call of the same product: records made with ``matrix @ dense`` stay
    reproducible. Values spanning many magnitudes make any other summation order visible."""
    generator = torch.Generator().manual_seed(0)
    train = sp.random(300, 200, density=0.2, format="csr", random_state=0, dtype=np.float32)
    train.data[:] = 1
    matrix = normalized_adjacency(train).matrix
    dense = torch.randn(matrix.shape[0], 16, generator=generator) * 10.0 ** torch.randint(-6, 6, (matrix.shape[0], 1),
                                                                                      generator=generator)
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            assert torch.equal(sparse_times_dense(matrix, dense), matrix @ dense)
            assert torch.equal(sparse_times_dense(matrix, dense.T.contiguous().T), matrix @ dense)  # strided input
        finally:
            torch.set_num_threads(previous)
    # A differentiable input (a double backward through propagation) takes the plain product: out= is not.
    tracked = dense.clone().requires_grad_()
    sparse_times_dense(matrix, tracked).sum().backward()
    assert torch.equal(tracked.grad, matrix @ torch.ones_like(dense))   # the matrix is symmetric
