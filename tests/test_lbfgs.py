"""The compact L-BFGS (issue 13): the same directions as the two-loop recursion, flat contiguous buffers, and
one host read a step, counted by wrapping every way a tensor reaches the host."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import Settings, images
from pipeline.engine.lbfgs import ProjectedLBFGS, evaluate, run_projected_lbfgs
from pipeline.engine.losses import gram
from pipeline.engine.optimize import Monitor

pytestmark = pytest.mark.usefixtures("torch_threads")

def two_loop(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The textbook recursion (Nocedal and Wright, algorithm 7.4), the reference for the compact form."""
    q, alphas = g.clone(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (s @ y)
        alphas.append(a)
        q -= a * y
    s, y = pairs[-1]
    q *= (s @ y) / (y @ y)
    for (s, y), a in zip(pairs, reversed(alphas)):
        q += s * (a - (y @ q) / (s @ y))
    return -q


def test_compact_direction_equals_the_two_loop_recursion_through_the_ring():
    """Random convex pairs (y = A s), pushed through a ring of 4 past wrap-around, and after a clear."""
    torch.manual_seed(0)
    n = 50
    a = torch.randn(n, n, dtype=torch.float64)
    a = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    opt = ProjectedLBFGS(torch.zeros(n), history=4, keep_in_range=False)
    pairs = []
    for k in range(7):
        s = torch.randn(n, dtype=torch.float64)
        opt.s, opt.y = s.float(), (a @ s).float()
        opt.g = torch.randn(n)
        pairs = (pairs + [(opt.s.double(), opt.y.double())])[-4:]
        opt._remember(True)
        got = opt._compact_direction().double()
        want = two_loop(opt.g.double(), pairs)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max()), k
        if k == 4:
            opt.clear()
            pairs = []
    assert opt.count == 2 and opt.start == 0


def test_buffers_are_flat_contiguous_fp32_and_a_step_reads_the_host_once(engine, content, style, host_reads):
    problem, hw = engine.build_loss(content, [style], Settings(size=48))
    opt = ProjectedLBFGS(images.to_tensor(content.resize(hw[::-1])), history=5, keep_in_range=True)
    opt.f, opt.g, _ = evaluate(problem, opt.x, opt.shape)
    n = opt.x.numel()
    host_reads.clear()
    steps = evaluations = 0
    while steps < 8:
        f_new, g_new, parts = evaluate(problem, opt.propose(), opt.shape)
        evaluations += 1
        before = len(host_reads)
        outcome = opt.consume(opt.pack(f_new, g_new, parts).tolist())
        assert len(host_reads) == before + 1, host_reads[before:]  # the packed read, nothing else
        steps += outcome.kind == "step"
        assert outcome.kind != "converged"
    assert host_reads == ["tolist"] * evaluations
    assert evaluations <= steps + 2  # backtracking is rare: nearly every step is exactly one read
    for vec in (opt.x, opt.g, opt.pg):
        assert vec.is_contiguous() and vec.dtype == torch.float32 and vec.dim() == 1
    assert opt.x.numel() == n and opt.pairs.shape == (10, n) and opt.pairs.is_contiguous()
    assert opt.pairs.dtype == torch.float32 and opt.count == 5  # the ring is full: pairs were kept


def test_the_counter_sees_reads_it_must_count(host_reads):
    """A check on the check: each way of reading a tensor is counted (else the test above proves nothing)."""
    t = torch.tensor([1.5])
    float(t), t.item(), t.tolist(), bool(t), int(t), t.numpy()
    assert host_reads == ["__float__", "item", "tolist", "__bool__", "__int__", "numpy"]


def test_run_reads_the_host_once_per_evaluation(engine, content, style, host_reads):
    problem, hw = engine.build_loss(content, [style], Settings(size=48))
    calls = []
    counted = lambda x: calls.append(1) or problem(x)  # noqa: E731
    start = images.to_tensor(content.resize(hw[::-1]))
    host_reads.clear()
    run_projected_lbfgs(counted, start, 10, Monitor(10, 1, 1, 0, 1), history=5, keep_in_range=True)
    assert len(host_reads) == len(calls) - 1  # the first evaluation (at the start) is never read alone
    assert len(calls) - 1 <= 12  # 10 steps, at most two backtracks


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gram_from_the_nhwc_view_equals_the_nchw_one(dtype):
    torch.manual_seed(1)
    f = torch.randn(2, 16, 9, 7).to(dtype)
    nhwc = f.contiguous(memory_format=torch.channels_last)
    assert not nhwc.is_contiguous() and nhwc.permute(0, 2, 3, 1).is_contiguous()  # the view the Gram reads
    reference = torch.einsum("bchw,bdhw->bcd", f.double(), f.double())
    for layout in (f, nhwc):
        assert gram(layout).dtype == torch.float32
        assert torch.allclose(gram(layout).double(), reference, rtol=1e-5, atol=1e-4)
    assert torch.allclose(gram(f), gram(nhwc), rtol=1e-5, atol=1e-5)


def test_the_total_stays_fp32_under_bf16_autocast(engine, content, style):
    """The weighted total is what the line search compares: bf16 would keep 3 of its digits (a matmul autocasts)."""
    problem, hw = engine.build_loss(content, [style], Settings(size=48, precision="bf16"))
    pixels = images.to_tensor(content.resize(hw[::-1]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = problem.loss.per_image(pixels)
    assert total.dtype == torch.float32
    weights = torch.tensor(problem.loss.weights, dtype=torch.float64)
    assert total.double().item() == pytest.approx((parts.double()[0] * weights).sum().item(), rel=1e-6)
