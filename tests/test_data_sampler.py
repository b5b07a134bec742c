"""InfiniteSampler: seeded, resumable from a sample count, disjoint covering DDP shards."""

import itertools
import json

import pytest

from vidgen.data.sampler import InfiniteSampler
from vidgen.errors import VidgenError


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_resume_is_exact():
    full = take(InfiniteSampler(13, seed=5), 60)
    s = InfiniteSampler(13, seed=5)
    head = take(s, 23)
    state = json.loads(json.dumps(s.state_dict()))
    r = InfiniteSampler(13, seed=5)
    r.load_state_dict(state)
    assert head + take(r, 37) == full
    assert take(InfiniteSampler(13, seed=5, start=23), 37) == full[23:]


def test_epochs_are_permutations_and_seeded():
    a = take(InfiniteSampler(10, seed=1), 30)
    for e in range(3):
        assert sorted(a[e * 10:(e + 1) * 10]) == list(range(10))
    assert a[:10] != a[10:20]
    assert a != take(InfiniteSampler(10, seed=2), 30)
    assert take(InfiniteSampler(5, shuffle=False), 7) == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_shards_disjoint_and_covering(world):
    n, steps, start = 12, 12, 8  # 12 positions per rank from global position 8
    full = take(InfiniteSampler(n, seed=3, start=start), steps * world)
    shards = [take(InfiniteSampler(n, seed=3, rank=r, world_size=world, start=start), steps) for r in range(world)]
    interleaved = [shards[r][k] for k in range(steps) for r in range(world)]
    assert interleaved == full  # ranks partition the single-process stream exactly
    positions = [{start + k * world + r for k in range(steps)} for r in range(world)]
    assert all(not (positions[a] & positions[b]) for a in range(world) for b in range(a + 1, world))


def test_state_mismatch_is_reported():
    s = InfiniteSampler(10, seed=0)
    with pytest.raises(VidgenError, match="does not match"):
        s.load_state_dict({"seed": 0, "samples": 4, "dataset_len": 11, "world_size": 1})
