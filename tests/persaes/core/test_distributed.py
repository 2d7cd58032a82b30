from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

from persaes.core import distributed
from persaes.core.distributed import World, shard
from persaes.core.features import Features
from persaes.core.model import STATS, AttentionHead
from persaes.core.train import GenericSettings, _StepLoss

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture()
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_without_torchrun_there_is_one_process_and_nothing_to_join(one_process: None) -> None:
    assert distributed.world() == World(0, 1, 0) and not distributed.launched()
    assert distributed.init("cpu") == World(0, 1, 0) and not dist.is_initialized()
    head = torch.nn.Linear(2, 1)
    before = head.weight.detach().clone()
    assert distributed.data_parallel(head) is head
    distributed.broadcast_module(head)
    distributed.barrier()
    distributed.shutdown()
    assert torch.equal(head.weight, before)
    assert distributed.all_mean(2.5) == 2.5 and distributed.all_gather([1]) == [[1]]
    assert distributed.rank_device(torch.device("cpu")) == torch.device("cpu")


def test_the_world_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    me = distributed.world()
    assert distributed.launched() and me == World(2, 3, 0) and not me.is_main
    assert shard(list(range(8))) == [2, 5]
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK='two'"):
        distributed.world()
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="rank 3 of 3"):
        distributed.world()


@given(st.integers(0, 60), st.integers(1, 9))
def test_the_shards_are_disjoint_cover_everything_and_are_balanced(n: int, size: int) -> None:
    items = [f"photo{i}.jpg" for i in range(n)]
    shares = [shard(items, World(rank, size)) for rank in range(size)]
    assert sorted(x for share in shares for x in share) == sorted(items)  # each item once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert all(share == sorted(share, key=items.index) for share in shares)  # in the list's order
    assert shard(items, World(0, size)) == shard(items, World(0, size))  # the same on every call


def features(n: int, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(n, 4, 3, 3, generator=g), torch.randn(n, 6, 3, 3, generator=g),
                    torch.randn(n, 8, generator=g), torch.randn(n, STATS, generator=g), torch.rand(n, 3, 96, 96))


@pytest.mark.parametrize(("rows", "pairs", "size"), [(8, 6, 2), (5, 3, 2), (7, 5, 3), (1, 2, 2)])
def test_the_ranks_averaged_gradients_are_the_whole_batchs(rows: int, pairs: int, size: int) -> None:
    """What DistributedDataParallel does to the ranks' shares (averages their gradients) gives the gradient of
    the step in one process, however unevenly the batch falls on the ranks (a rank may get no row)."""
    torch.manual_seed(0)
    head = AttentionHead((4, 6, 8), hidden=4, dropout=0.0, quality_width=2)
    settings = GenericSettings(pair_weight=2.0)
    feats = features(rows + 2 * pairs)
    hists = torch.softmax(torch.randn(rows, 10), dim=1)
    rated, pair_rows = torch.arange(rows), torch.arange(rows, rows + 2 * pairs).reshape(-1, 2)

    def grads(rank: int, size: int) -> tuple[float, list[torch.Tensor]]:
        head.zero_grad()
        mine, my_pairs = rated[rank::size], pair_rows[rank::size]
        loss = _StepLoss(head, settings, size)(feats.take(mine), hists[mine], rows,
                                               feats.take(my_pairs.reshape(-1)) if len(my_pairs) else None, pairs)
        loss.backward()
        assert all(p.grad is not None for p in head.parameters())  # every rank's backward reaches every weight
        return float(loss.detach()), [p.grad.clone() for p in head.parameters()]

    whole_loss, whole = grads(0, 1)
    shares = [grads(rank, size) for rank in range(size)]
    averaged = [torch.stack(g).mean(0) for g in zip(*(g for _, g in shares))]
    assert all(torch.allclose(a, w, atol=1e-6, rtol=1e-4) for a, w in zip(averaged, whole))
    assert sum(loss for loss, _ in shares) / size == pytest.approx(whole_loss, rel=1e-5)  # the reported loss
    assert not all(torch.equal(shares[0][1][0], g) for g in (s[1][0] for s in shares[1:]))  # the shares differ
