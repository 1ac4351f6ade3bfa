"""Two processes (gloo on the CPU, launched from the test) give the one-process posterior: the same k x k
curvature and the same predictions, each computing half of the kernel features, half of each NeuralEF batch
(with the gradient of the whole batch) and half of the curvature and validation batches."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA, distributed
from ella.eigen import NeuralEF, Nystrom
from ella.kernels import EmpiricalNTK
from ella.methods import Tuning


def problem():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    x, xv, xt = (torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (90, 40, 25))
    with torch.no_grad():
        y, yv = model(x).argmax(-1), torch.multinomial(model(xv).softmax(-1), 1, generator=g)[:, 0]
    return model, DataLoader(TensorDataset(x, y), batch_size=16), DataLoader(TensorDataset(xv, yv), batch_size=8), xt


def fit(solver: str):
    model, train, val, xt = problem()
    kernel = EmpiricalNTK(model, "jvp", num_samples=96, progress=False)
    chosen = NeuralEF(5, steps=60, batch_size=30, lr=3e-3, progress=False) if solver == "neuralef" else Nystrom(5)
    post = ELLA(model, kernel=kernel, solver=chosen, progress=False, tuning=Tuning(fold_in="tune")).fit(train, val)
    return post, xt


def batch_loss(theta, scales, reduce):
    """A loss of sums over the rows of a batch, normalised like NeuralEF's L2 batch norm: each row depends on the
    sum over all rows. One process holds every row's scale; each of several holds its own."""
    square = reduce(sum((a * theta).pow(2).sum() for a in scales))
    moment = reduce(sum((a * theta / square.sqrt()).sum() + (a * theta).pow(3).sum() for a in scales))
    return moment.pow(2)


SCALES = [torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([2.0, 0.25], dtype=torch.float64)]
THETA = torch.tensor([0.3, -1.2], dtype=torch.float64)


def worker(rank: int, size: int, init: str, out: str, solver: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        theta = THETA.clone().requires_grad_()
        batch_loss(theta, SCALES[rank::size], distributed.total_with_grad).backward()
        distributed.whole_gradient([theta])
        torch.save(theta.grad, os.path.join(out, f"grad{rank}.pt"))
        post, xt = fit(solver)
        post.save(os.path.join(out, "post.pt"))  # the first process writes it
        torch.save(
            {
                "G": post.posterior_precision,
                "probs": post.predict(xt),
                "prior": post.prior_precision_,
                "folded": post.num_folded_,
                "world": distributed.world(),
            },
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("solver", ["neuralef", "nystrom"])
def test_two_processes_give_the_one_process_posterior(tmp_path, solver):
    mp.spawn(worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path), solver), nprocs=2, join=True)
    alone, xt = fit(solver)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world"] for r in ranks] == [(0, 2), (1, 2)]
    for result in ranks:
        assert result["prior"] == alone.prior_precision_ and result["folded"] == alone.num_folded_
        G = alone.posterior_precision
        assert ((result["G"] - G).norm() / G.norm()) < 1e-5
        assert ((result["probs"] - alone.predict(xt)).abs().max()) < 1e-5
    assert torch.equal(ranks[0]["G"], ranks[1]["G"]) and torch.equal(ranks[0]["probs"], ranks[1]["probs"])
    assert sorted(p.name for p in tmp_path.glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]
    assert [p.name for p in tmp_path.glob("post*")] == ["post.pt"]  # written once
    theta = THETA.clone().requires_grad_()
    batch_loss(theta, SCALES, lambda t: t).backward()  # one process, the whole batch
    for r in range(2):  # every process holds the gradient of the whole batch's loss
        assert torch.allclose(torch.load(tmp_path / f"grad{r}.pt", weights_only=True), theta.grad, rtol=1e-12)
    loaded = ELLA.load(tmp_path / "post.pt", alone.model)
    assert torch.allclose(loaded.predict(xt), ranks[0]["probs"], atol=1e-12)


def test_a_single_process_shares_nothing():
    assert distributed.world() == (0, 1) and distributed.is_main()
    assert all(distributed.mine(i) for i in range(5))
    t = torch.arange(3.0)
    assert distributed.total(t) is t and torch.equal(t, torch.arange(3.0))
    with distributed.sharing():
        assert not distributed.shared()  # nothing to share with
