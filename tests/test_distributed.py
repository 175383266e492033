"""vivit.distributed: the launcher's environment, the split of a list across ranks, each rank's device."""

from __future__ import annotations

import pytest
import torch

from vivit.distributed import (
    DistributedContext,
    distributed_context,
    launch_env,
    local_device,
    shard,
)


def test_shards_partition_the_list_in_a_fixed_way():
    items = list(range(11))
    shares = [shard(items, rank, 3) for rank in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(item for share in shares for item in share) == items
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\)"):
        shard(items, 3, 3)


def test_launch_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert (launch_env().rank, launch_env().world_size) == (0, 1)
    with distributed_context() as context:  # alone: no process group
        assert not context.distributed and context.is_main and context.all_gather("x") == ["x"]
        assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (launch_env().rank, launch_env().local_rank) == (1, 1)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set: start the job with torchrun"), distributed_context():
        pass
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="must be integers"):
        launch_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent: RANK=2, WORLD_SIZE=2"):
        launch_env()


def test_each_gpu_rank_takes_its_local_device():
    rank3 = DistributedContext(rank=3, world_size=4, local_rank=1)
    assert local_device("cuda", rank3) == torch.device("cuda", 1)  # GPU 1 of this machine
    assert local_device("cuda:0", rank3) == torch.device("cuda", 0)  # an explicit index is kept
    assert local_device("cpu", rank3) == torch.device("cpu")
    expected = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert local_device("auto", rank3) == expected and local_device(None, rank3) == expected
