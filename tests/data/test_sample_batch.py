import pickle

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rldataflow.data import MultiAgentBatch, SampleBatch, concat_samples


def make_batch(n: int, offset: int = 0, **kw) -> SampleBatch:
    return SampleBatch(
        {
            SampleBatch.OBS: np.arange(offset, offset + n, dtype=np.float32)[:, None].repeat(3, 1),
            SampleBatch.REWARDS: np.arange(offset, offset + n, dtype=np.float32),
            SampleBatch.TERMINATEDS: np.zeros(n, dtype=bool),
        },
        **kw,
    )


def test_construction_and_sizes():
    b = make_batch(5, stats={"episode_returns": [1.0, 2.0]}, info={"weights_version": 3})
    assert b.count == 5 == len(b) == b.env_steps() == b.agent_steps()
    assert b.columns == ["obs", "rewards", "terminateds"]
    assert b.stats == {"episode_returns": [1.0, 2.0]}
    assert b.info == {"weights_version": 3}
    assert isinstance(b[SampleBatch.OBS], np.ndarray)
    assert SampleBatch(obs=[1, 2]).count == 2
    assert SampleBatch().count == 0


def test_wrong_length_names_column():
    with pytest.raises(ValueError, match="'rewards' has length 3"):
        SampleBatch({"obs": np.zeros((4, 2)), "rewards": np.zeros(3)})
    b = make_batch(4)
    with pytest.raises(ValueError, match="'advantages' has length 2"):
        b["advantages"] = np.zeros(2)
    with pytest.raises(ValueError, match="scalar"):
        SampleBatch({"obs": 1.0})
    b["advantages"] = np.ones(4)  # right length is fine
    assert b["advantages"].shape == (4,)


def test_concat_merges_stats_and_info():
    a = make_batch(3, stats={"episode_returns": [1.0]}, info={"weights_version": 1, "a": 1})
    b = make_batch(
        2,
        offset=3,
        stats={"episode_returns": [2.0], "episode_lengths": [5]},
        info={"weights_version": 2},
    )
    c = SampleBatch.concat_samples([a, b])
    assert c.count == 5
    np.testing.assert_array_equal(c[SampleBatch.REWARDS], np.arange(5))
    assert c.stats == {"episode_returns": [1.0, 2.0], "episode_lengths": [5]}
    assert c.info == {"weights_version": 2, "a": 1}
    assert concat_samples([a, SampleBatch()]).count == 3
    assert a.stats == {"episode_returns": [1.0]}  # inputs untouched


def test_concat_rejects_different_columns():
    a = make_batch(2)
    b = make_batch(2)
    del b[SampleBatch.REWARDS]
    with pytest.raises(ValueError, match="missing \\['rewards'\\]"):
        SampleBatch.concat_samples([a, b])


def test_slice_take_shuffle_copy():
    b = make_batch(6, stats={"episode_returns": [1.0]}, info={"v": 1})
    s = b.slice(2, 4)
    np.testing.assert_array_equal(s[SampleBatch.REWARDS], [2, 3])
    assert s.stats == {} and s.info == {"v": 1}
    sh = b.shuffle(np.random.default_rng(0))
    assert sorted(sh[SampleBatch.REWARDS].tolist()) == list(range(6))
    np.testing.assert_array_equal(sh[SampleBatch.OBS][:, 0], sh[SampleBatch.REWARDS])
    assert sh.stats == b.stats
    cp = b.copy()
    cp[SampleBatch.REWARDS][0] = 100
    cp.stats["episode_returns"].append(5.0)
    assert b[SampleBatch.REWARDS][0] == 0 and b.stats["episode_returns"] == [1.0]


def test_minibatches():
    b = make_batch(10)
    sizes = [mb.count for mb in b.minibatches(4, shuffle=False)]
    assert sizes == [4, 4, 2]
    assert [mb.count for mb in b.minibatches(4, rng=0, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError):
        next(b.minibatches(0))


def test_split_by_episode():
    b = SampleBatch(
        {
            SampleBatch.EPS_ID: np.array([7, 7, 8, 8, 8, 9]),
            SampleBatch.ENV_ID: np.array([0, 0, 0, 0, 0, 1]),
            SampleBatch.REWARDS: np.arange(6, dtype=np.float32),
        }
    )
    assert [p.count for p in b.split_by_episode()] == [2, 3, 1]
    by_done = SampleBatch(
        {
            SampleBatch.TERMINATEDS: np.array([False, True, False, False]),
            SampleBatch.TRUNCATEDS: np.array([False, False, False, True]),
        }
    )
    assert [p.count for p in by_done.split_by_episode()] == [2, 2]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_keeps_attributes(dumps):
    b = make_batch(3, stats={"episode_returns": [1.5]}, info={"weights_version": 4})
    r = pickle.loads(dumps(b))
    assert type(r) is SampleBatch
    assert r.stats == b.stats and r.info == b.info
    for k in b:
        np.testing.assert_array_equal(r[k], b[k])


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=5),
    mb=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_concat_slice_minibatch_round_trips(sizes, mb, seed):
    batches, offset = [], 0
    for i, n in enumerate(sizes):
        batches.append(make_batch(n, offset, stats={"episode_returns": [float(i)]}))
        offset += n
    total = SampleBatch.concat_samples(batches)
    assert total.count == sum(sizes)
    assert total.stats["episode_returns"] == [float(i) for i in range(len(sizes))]
    # Slicing at the original boundaries gives back the pieces.
    start = 0
    for b in batches:
        piece = total.slice(start, start + b.count)
        for k in b:
            np.testing.assert_array_equal(piece[k], b[k])
        start += b.count
    # Shuffled minibatches cover every row exactly once and keep rows intact.
    mbs = list(total.minibatches(mb, rng=seed))
    assert all(m.count <= mb for m in mbs)
    rows = np.concatenate([m[SampleBatch.REWARDS] for m in mbs]) if mbs else np.array([])
    assert sorted(rows.tolist()) == list(range(total.count))
    for m in mbs:
        np.testing.assert_array_equal(m[SampleBatch.OBS][:, 2], m[SampleBatch.REWARDS])
    # Concatenating the minibatches back has the same multiset of rows.
    if mbs:
        back = SampleBatch.concat_samples(mbs)
        assert back.count == total.count


def test_multi_agent_batch():
    a, b = make_batch(3), make_batch(2)
    mab = MultiAgentBatch({"p0": a, "p1": b}, env_steps=3, stats={"episode_returns": [1.0]})
    assert mab.env_steps() == 3 and mab.agent_steps() == 5 and mab.count == 3
    both = SampleBatch.concat_samples([mab, mab])
    assert isinstance(both, MultiAgentBatch)
    assert both.env_steps() == 6 and both.policy_batches["p0"].count == 6
    assert both.stats == {"episode_returns": [1.0, 1.0]}
    sel = mab.select(["p1"])
    assert list(sel.policy_batches) == ["p1"] and sel.env_steps() == 3
    r = pickle.loads(pickle.dumps(mab))
    assert r.agent_steps() == 5 and r.stats == mab.stats
    with pytest.raises(TypeError):
        SampleBatch.concat_samples([mab, a])


def test_copy_constructor_and_update_validate():
    b = make_batch(3, stats={"episode_returns": [2.0]}, info={"v": 1})
    c = SampleBatch(b)
    assert c.stats == b.stats and c.info == b.info
    assert SampleBatch(b, info={"v": 2}).info == {"v": 2}
    with pytest.raises(ValueError, match="'x' has length 1"):
        c.update({"x": np.zeros(1)})
    c.update(x=np.zeros(3))
    assert "x" in c
