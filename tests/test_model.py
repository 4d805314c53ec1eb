"""The recommender's hand-written backward passes give autograd's gradients bit for bit, so that speeding
them up does not change any trained run (records stay reproducible across code versions)."""
import pytest
import torch

from lwbench.training.model import _SquaredSum, gather_rows


def _order_sensitive_parts(generator: torch.Generator, rows: int, batch: int, dim: int
                           ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A table, three index parts that share rows, and row gradients whose magnitudes span many orders, so
    that summing the same gradients in another order changes the result."""
    table = torch.randn(rows, dim, generator=generator)
    indices = [torch.randint(0, rows, (batch,), generator=generator) for _ in range(3)]
    grads = [torch.randn(batch, dim, generator=generator) * 10.0 ** torch.randint(-6, 6, (batch, 1), generator=generator)
             for _ in range(3)]
    return table, indices, grads


@pytest.fixture
def trainer_kernels():
    """The trainer's kernel settings (deterministic algorithms) at two threads, restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


# a tiny case, and a synthetic-epoch-sized one (large enough for torch's multi-threaded kernels)
@pytest.mark.parametrize("rows, batch, dim", [(7, 40, 4), (5000, 8192, 32)])
def test_gather_rows_gradient_equals_one_concatenated_gather_bit_for_bit(rows, batch, dim, trainer_kernels):
    table, indices, grads = _order_sensitive_parts(torch.Generator().manual_seed(0), rows, batch, dim)
    reference_table = table.clone().requires_grad_()
    reference_rows = reference_table[torch.cat(indices)].split([len(i) for i in indices])
    torch.autograd.backward(reference_rows, grads)

    fast_table = table.clone().requires_grad_()
    fast_rows = gather_rows(fast_table, *indices)
    torch.autograd.backward(fast_rows, grads)

    for fast, reference in zip(fast_rows, reference_rows):
        assert torch.equal(fast, reference)
    assert torch.equal(fast_table.grad, reference_table.grad)

    # The data can tell orders apart: accumulating the parts in reverse gives other bits.
    reversed_grad = torch.zeros_like(table)
    for index, grad in reversed(list(zip(indices, grads))):
        reversed_grad.index_put_((index,), grad, accumulate=True)
    assert not torch.equal(reversed_grad, reference_table.grad)


def test_squared_sum_value_and_gradient_equal_autograd_pow_bit_for_bit():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=generator) * 10.0 ** torch.randint(-4, 4, (64, 1), generator=generator)
    scale = 1e-4 / 8007   # a loss weight like the L2 term's, not a power of two

    reference_x = x.clone().requires_grad_()
    reference = reference_x.square().sum()
    (reference * scale).backward()

    fast_x = x.clone().requires_grad_()
    fast = _SquaredSum.apply(fast_x)
    (fast * scale).backward()

    assert torch.equal(fast, reference)
    assert torch.equal(fast_x.grad, reference_x.grad)
