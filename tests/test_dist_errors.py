"""A peer's death inside collectives torch runs itself (DDP forward / backward) becomes the
one DistError line; any other error of this rank stays what it is."""

import pytest

from kdep_cache.dist import Dist, DistError

GLOO = ("[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
        "[127.0.0.1]:16585: Connection reset by peer")


def test_peer_death_in_implicit_collectives_is_one_line():
    with pytest.raises(DistError) as e:
        with Dist(rank=1, world_size=2).implicit("train: DDP gradient all-reduce"):
            raise RuntimeError(GLOO)
    assert str(e.value).startswith("rank 1: train: DDP gradient all-reduce failed")
    assert "rerun the same command" in str(e.value) and "\n" not in str(e.value)


def test_other_errors_and_one_process_are_left_alone():
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        with Dist(rank=0, world_size=2).implicit("train: DDP forward"):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")
    with pytest.raises(RuntimeError, match="Connection reset"):
        with Dist().implicit("train: DDP forward"):
            raise RuntimeError(GLOO)
