"""MultiAgentRolloutWorker: batches, per-agent episode ends, policies, weights, state."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest

pytest.importorskip("pettingzoo")

from pettingzoo import ParallelEnv  # noqa: E402

from rldataflow.data import MultiAgentBatch, SampleBatch  # noqa: E402
from rldataflow.ops import ParallelRollouts, SelectExperiences, TrainOneStep  # noqa: E402
from rldataflow.policies import TorchPolicy, compute_gae  # noqa: E402
from rldataflow.policies.policy_spec import UnknownPolicyError  # noqa: E402
from rldataflow.runtime import get_runtime  # noqa: E402
from rldataflow.workers import MultiAgentRolloutWorker, WorkerSet  # noqa: E402
from rldataflow.workers.multi_agent_worker import (  # noqa: E402
    AGENT_SLOTS,
    POLICY_RETURNS_PREFIX,
    split_env_id,
)

MA_CARTPOLE = "rldataflow/MultiAgentCartPole-v0"
SB = SampleBatch


class ComingAndGoing(ParallelEnv):
    """Agents that join and leave: an 8-step episode.

    * ``stayer`` (reward 1): acts on env steps 1..8, truncated on step 8 (ends the episode);
    * ``leaver`` (reward 2): acts on steps 1..3, terminated on step 3 (or, with
      ``silent_leave``, just gone after step 3 with neither flag);
    * ``late`` (reward 3): appears after step 2, acts on steps 3..6, truncated on step 6
      (without its final observation if ``drop_final_obs``).

    Observations are ``[env step, agent index, 1]`` (``late_obs_dim`` changes late's size).
    """

    metadata = {"name": "coming_and_going_v0"}

    def __init__(self, silent_leave: bool = False, drop_final_obs: bool = False,
                 late_obs_dim: int = 3) -> None:
        self.possible_agents = ["stayer", "leaver", "late"]
        self.agents: list[str] = []
        self.silent_leave = silent_leave
        self.drop_final_obs = drop_final_obs
        self._spaces = {a: gymnasium.spaces.Box(-100, 100, (3,), np.float32)
                        for a in self.possible_agents}
        self._spaces["late"] = gymnasium.spaces.Box(-100, 100, (late_obs_dim,), np.float32)
        self.step_count = 0
        self.seen_actions: list[dict[str, Any]] = []

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return gymnasium.spaces.Discrete(2)

    def _obs(self, agent: str) -> np.ndarray:
        out = np.zeros(self._spaces[agent].shape, np.float32)
        out[:3] = [self.step_count, self.possible_agents.index(agent), 1.0]
        return out

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.step_count = 0
        self.agents = ["stayer", "leaver"]
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.seen_actions.append(dict(actions))
        self.step_count += 1
        k = self.step_count
        reward_of = {"stayer": 1.0, "leaver": 2.0, "late": 3.0}
        rewards = {a: reward_of[a] for a in self.agents}
        terms = {a: False for a in self.agents}
        truncs = {a: False for a in self.agents}
        leaving = []
        if k == 3 and "leaver" in self.agents:
            leaving.append("leaver")
            terms["leaver"] = not self.silent_leave
        if k == 6 and "late" in self.agents:
            leaving.append("late")
            truncs["late"] = True
        if k == 8:
            leaving.append("stayer")
            truncs["stayer"] = True
        obs = {a: self._obs(a) for a in self.agents}
        if self.drop_final_obs and "late" in leaving:
            del obs["late"]
        self.agents = [a for a in self.agents if a not in leaving]
        if k == 2:
            self.agents.append("late")
            obs["late"] = self._obs("late")
        return obs, rewards, terms, truncs, {a: {} for a in rewards}


def coming_and_going(cfg: dict) -> ComingAndGoing:
    return ComingAndGoing(**cfg)


def segments(batch: SampleBatch) -> list[SampleBatch]:
    """Pieces of one (env, agent) pair and episode (env_id / eps_id changes)."""
    return batch.split_by_episode()


def test_agents_join_and_leave_with_per_agent_ends():
    w = MultiAgentRolloutWorker(coming_and_going, num_envs=2, rollout_fragment_length=8,
                                include_next_obs=True, seed=0)
    b = w.sample()
    assert isinstance(b, MultiAgentBatch) and list(b.policy_batches) == ["default_policy"]
    assert b.env_steps() == b.count == 16 and w.num_steps_sampled == 16
    pb = b.policy_batches["default_policy"]
    assert pb.count == b.agent_steps() == 2 * (8 + 3 + 4)
    env_index, slot = split_env_id(pb[SB.ENV_ID])
    by_agent = {}
    for piece in segments(pb):
        e, s = split_env_id(int(piece[SB.ENV_ID][0]))
        agent = w.agent_ids[s]
        by_agent[(int(e), agent)] = piece
        # one contiguous, time-ordered segment per (env, agent): t = 0, 1, 2, ...
        np.testing.assert_array_equal(piece[SB.T], np.arange(piece.count))
        # obs[0] holds the env step on which the agent observed
        first_step = {"stayer": 0, "leaver": 0, "late": 2}[agent]
        np.testing.assert_array_equal(piece[SB.OBS][:, 0], first_step + np.arange(piece.count))
    assert sorted(by_agent) == [(e, a) for e in (0, 1) for a in ("late", "leaver", "stayer")]
    for e in (0, 1):
        stayer, leaver, late = (by_agent[(e, a)] for a in ("stayer", "leaver", "late"))
        assert (stayer.count, leaver.count, late.count) == (8, 3, 4)
        assert leaver[SB.TERMINATEDS][-1] and not leaver[SB.TRUNCATEDS][-1]
        assert late[SB.TRUNCATEDS][-1] and not late[SB.TERMINATEDS][-1]
        assert stayer[SB.TRUNCATEDS][-1]
        for piece in (stayer, leaver, late):
            done = piece[SB.TERMINATEDS] | piece[SB.TRUNCATEDS]
            assert not done[:-1].any()
        np.testing.assert_array_equal(late[SB.REWARDS], 3.0)
    assert set(slot.tolist()) == {0, 1, 2} and set(env_index.tolist()) == {0, 1}
    # Truncated agents bootstrap from V(their final obs) = V(next_obs of the row).
    policy = w.get_policy()
    trunc = pb[SB.TRUNCATEDS]
    assert trunc.sum() == 4
    np.testing.assert_allclose(pb[SB.BOOTSTRAP_VALUE][trunc],
                               policy.value(pb[SB.NEXT_OBS][trunc]), rtol=1e-5)
    # Stats: env returns sum all agents; per-policy returns are per agent sub-episode.
    assert b.stats["episode_returns"] == [8 * 1 + 3 * 2 + 4 * 3] * 2
    assert b.stats["episode_lengths"] == [8, 8]
    assert sorted(b.stats[POLICY_RETURNS_PREFIX + "default_policy"]) == [6, 6, 8, 8, 12, 12]


def test_fragment_cut_bootstraps_live_agents_and_gae_is_per_segment():
    w = MultiAgentRolloutWorker(coming_and_going, num_envs=1, rollout_fragment_length=5,
                                include_next_obs=True, seed=0)
    pb = w.sample().policy_batches["default_policy"]
    policy = w.get_policy()
    pieces = {w.agent_ids[split_env_id(int(p[SB.ENV_ID][0]))[1]]: p for p in segments(pb)}
    assert {a: p.count for a, p in pieces.items()} == {"stayer": 5, "leaver": 3, "late": 3}
    for agent in ("stayer", "late"):  # alive at the cut: V(obs after the fragment)
        p = pieces[agent]
        assert not (p[SB.TERMINATEDS][-1] or p[SB.TRUNCATEDS][-1])
        np.testing.assert_allclose(p[SB.BOOTSTRAP_VALUE][-1:],
                                   policy.value(p[SB.NEXT_OBS][-1:]), rtol=1e-5)
    for p in pieces.values():
        adv, _ = compute_gae(p[SB.REWARDS], p[SB.VF_PREDS], p[SB.TERMINATEDS],
                             p[SB.TRUNCATEDS], p[SB.BOOTSTRAP_VALUE],
                             gamma=policy.config["gamma"], lambda_=policy.config["lambda_"])
        np.testing.assert_allclose(p[SB.ADVANTAGES], adv, rtol=1e-5, atol=1e-6)
    # The next fragment continues the live agents' trajectories (t goes on).
    pb2 = w.sample().policy_batches["default_policy"]
    first: dict[str, int] = {}
    for p in segments(pb2):
        first.setdefault(w.agent_ids[split_env_id(int(p[SB.ENV_ID][0]))[1]], int(p[SB.T][0]))
    assert first["stayer"] == 5 and first["late"] == 3


def test_leaving_without_flag_or_final_obs_is_a_termination():
    w = MultiAgentRolloutWorker(coming_and_going, {"silent_leave": True, "drop_final_obs": True},
                                rollout_fragment_length=8, seed=0)
    pb = w.sample().policy_batches["default_policy"]
    pieces = {w.agent_ids[split_env_id(int(p[SB.ENV_ID][0]))[1]]: p for p in segments(pb)}
    assert pieces["leaver"][SB.TERMINATEDS][-1]  # vanished without a flag
    assert pieces["late"][SB.TERMINATEDS][-1]  # truncated, but no final obs to bootstrap from
    assert not pieces["late"][SB.TRUNCATEDS][-1]


class FixedPolicy:
    """A policy of another kind: no torch, no value function, its own learn_on_batch."""

    def __init__(self, obs_space: Any, act_space: Any) -> None:
        self.weights_version = 0
        self.w = np.zeros(1)
        self.trained_on: list[int] = []

    def compute_actions(self, obs: np.ndarray, explore: bool = True):
        return np.zeros(len(obs), np.int64), {}

    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        return batch

    def learn_on_batch(self, batch: SampleBatch, **kwargs: Any) -> dict[str, float]:
        self.trained_on.append(batch.count)
        self.weights_version += 1
        return {"num_grad_updates": 1}

    def get_weights(self):
        return {"w": self.w.copy()}

    def set_weights(self, weights, version=None):
        self.w = weights["w"]
        self.weights_version = version if version is not None else self.weights_version + 1

    def get_state(self):
        return {"w": self.w.copy(), "weights_version": self.weights_version}

    def set_state(self, state):
        self.w, self.weights_version = state["w"], state["weights_version"]


def torch_factory(obs_space, act_space):
    return TorchPolicy(obs_space, act_space, {"lr": 1e-3}, seed=3)


def test_policies_of_different_classes_in_one_worker():
    w = MultiAgentRolloutWorker(
        MA_CARTPOLE, {"num_agents": 2}, num_envs=2, rollout_fragment_length=20,
        policy_factories={"learner": torch_factory, "fixed": FixedPolicy},
        policy_mapping_fn=lambda agent: "learner" if agent == "agent_0" else "fixed", seed=0)
    b = w.sample()
    learner, fixed = b.policy_batches["learner"], b.policy_batches["fixed"]
    assert SB.BOOTSTRAP_VALUE in learner and SB.ADVANTAGES in learner
    assert SB.BOOTSTRAP_VALUE not in fixed and SB.VF_PREDS not in fixed
    np.testing.assert_array_equal(fixed[SB.ACTIONS], 0)
    stats = w.learn_on_batch(b, num_epochs=1)  # every policy, each with its own learner
    assert set(stats) == {"learner", "fixed", "num_grad_updates"}
    assert w.get_policy("fixed").trained_on == [fixed.count]
    assert w.weights_version == {"learner": 1, "fixed": 1}
    assert set(w.get_weights()) == {"learner", "fixed"}


def test_shared_vs_independent_policies():
    kw = dict(env=MA_CARTPOLE, env_config={"num_agents": 2}, num_envs=3,
              rollout_fragment_length=16, seed=0)
    shared = MultiAgentRolloutWorker(**kw, policy_factories={"shared": torch_factory},
                                     policy_mapping_fn="shared")
    indep = MultiAgentRolloutWorker(**kw, policy_factories={"p0": None, "p1": None},
                                    policy_mapping_fn="by_agent")
    assert shared.policy_ids() == ["shared"] and indep.policy_ids() == ["p0", "p1"]
    assert list(shared.get_weights()) == ["shared"] and list(indep.get_weights()) == ["p0", "p1"]
    opts = {id(p.optimizer) for p in indep.policies.values()}
    assert len(opts) == 2 and len({id(p.model) for p in indep.policies.values()}) == 2
    assert shared.policy is shared.get_policy() is shared.get_policy("shared")
    with pytest.raises(AttributeError, match="get_policy"):
        indep.policy  # noqa: B018
    sb, ib = shared.sample(), indep.sample()
    assert list(sb.policy_batches) == ["shared"] and list(ib.policy_batches) == ["p0", "p1"]
    assert sb.env_steps() == ib.env_steps() == 48
    # one policy gets every agent's steps; independent policies one agent's each
    assert sb.policy_batches["shared"].count == sb.agent_steps()
    slots = {pid: set(split_env_id(b[SB.ENV_ID])[1].tolist())
             for pid, b in ib.policy_batches.items()}
    assert slots == {"p0": {0}, "p1": {1}}
    # the two independent policies started from different weights (own seeds)
    w0, w1 = (indep.get_policy(p).get_weights() for p in ("p0", "p1"))
    assert any(not np.array_equal(w0[k], w1[k]) for k in w0)
    # learn one policy, or all
    before = indep.weights_version
    stats = indep.learn_on_batch(ib, policy_id="p1", num_epochs=1, minibatch_size=16)
    assert stats["num_grad_updates"] >= 1
    assert indep.weights_version["p0"] == before["p0"] and indep.weights_version["p1"] > 0
    sel = SelectExperiences(["p0"])(ib)
    assert indep.learn_on_batch(sel, policy_id="p0")["num_grad_updates"] == 1
    with pytest.raises(ValueError, match="pass policy_id"):
        indep.learn_on_batch(sel)
    all_stats = indep.learn_on_batch(ib, num_epochs=1)
    assert set(all_stats) == {"p0", "p1", "num_grad_updates"} and all_stats["num_grad_updates"] == 2


def test_mapping_errors_name_agent_and_policy():
    kw = dict(env=MA_CARTPOLE, env_config={"num_agents": 3}, rollout_fragment_length=4)
    with pytest.raises(UnknownPolicyError, match="agent 'agent_0' to unknown policy id 'nope'"):
        MultiAgentRolloutWorker(**kw, policy_factories={"p0": None},
                                policy_mapping_fn=lambda agent: "nope")
    with pytest.raises(UnknownPolicyError, match="no policy for agent 'agent_2'"):
        MultiAgentRolloutWorker(**kw, policy_factories={"p0": None, "p1": None},
                                policy_mapping_fn="by_agent")
    with pytest.raises(ValueError, match="'shared'.*2 policies"):
        MultiAgentRolloutWorker(**kw, policy_factories={"p0": None, "p1": None})
    with pytest.raises(ValueError, match="did you mean 'by_agent'"):
        MultiAgentRolloutWorker(**kw, policy_factories={"p0": None}, policy_mapping_fn="by_agnet")
    # by_agent also matches policies named like the agents
    w = MultiAgentRolloutWorker(**kw, policy_mapping_fn="by_agent",
                                policy_factories={"agent_2": None, "agent_0": None,
                                                  "agent_1": None})
    assert {pid: set(split_env_id(b[SB.ENV_ID])[1].tolist())
            for pid, b in w.sample().policy_batches.items()} == {
        "agent_0": {0}, "agent_1": {1}, "agent_2": {2}}
    with pytest.raises(ValueError, match="agent 'late'.*cannot share policy 'default_policy'"):
        MultiAgentRolloutWorker(coming_and_going, {"late_obs_dim": 5})


def test_same_seed_same_batches_and_complete_episodes():
    kw = dict(env=MA_CARTPOLE, env_config={"num_agents": 2}, num_envs=2,
              rollout_fragment_length=10, seed=4, policy_mapping_fn="by_agent",
              policy_factories={"a": None, "b": None})
    x, y = MultiAgentRolloutWorker(**kw), MultiAgentRolloutWorker(**kw)
    for _ in range(2):
        bx, by = x.sample(), y.sample()
        assert bx.stats == by.stats
        for pid in bx.policy_batches:
            for col in bx.policy_batches[pid]:
                np.testing.assert_array_equal(bx.policy_batches[pid][col],
                                              by.policy_batches[pid][col])
    c = MultiAgentRolloutWorker(**{**kw, "batch_mode": "complete_episodes"})
    rows = 0
    for _ in range(3):
        b = c.sample()
        assert b.env_steps() >= 20 and len(b.stats["episode_returns"]) >= 2
        for pid, pb in b.policy_batches.items():
            rows += pb.count
            pieces = segments(pb)
            # every returned agent sub-episode is whole: t from 0, ends with a done step
            assert all(p[SB.T][0] == 0 and (p[SB.TERMINATEDS][-1] or p[SB.TRUNCATEDS][-1])
                       for p in pieces)
            assert len(pieces) == len(b.stats[POLICY_RETURNS_PREFIX + pid])
            assert sorted(float(p[SB.REWARDS].sum()) for p in pieces) == sorted(
                b.stats[POLICY_RETURNS_PREFIX + pid])
    # No step is lost: the carry holds exactly the steps of the still open sub-episodes.
    carried = sum(len(v[SB.OBS]) for v in c._carry.values())
    assert carried == sum(t.t for st in c._envs for t in st.trajs.values())
    assert rows > 0


def test_weights_state_and_evaluate():
    kw = dict(env=MA_CARTPOLE, env_config={"num_agents": 2}, rollout_fragment_length=8,
              policy_mapping_fn="by_agent", policy_factories={"p0": None, "p1": None})
    a = MultiAgentRolloutWorker(**kw, seed=0)
    b = MultiAgentRolloutWorker(**kw, seed=1)
    a.learn_on_batch(a.sample(), num_epochs=2)
    assert a.weights_version == {"p0": 2, "p1": 2}
    b.set_weights(a.get_weights(), a.weights_version)
    assert b.weights_version == {"p0": 2, "p1": 2}
    batch = b.sample()
    assert batch.info["weights_version"] == {"p0": 2, "p1": 2}
    assert batch.policy_batches["p1"].info["weights_version"] == 2
    b.set_weights({"p1": a.get_weights()["p1"]}, version=9)  # one policy only
    assert b.weights_version == {"p0": 2, "p1": 9}
    c = MultiAgentRolloutWorker(**kw, seed=2)
    c.set_state(a.get_state())
    obs = np.ones((1, 4), np.float32)
    for pid in ("p0", "p1"):
        np.testing.assert_array_equal(c.get_policy(pid).value(obs), a.get_policy(pid).value(obs))
        assert c.get_policy(pid).num_grad_updates == 2
    returns = a.evaluate(2)
    per_policy = a.evaluate_per_policy(2)
    assert len(returns) == 2 and all(r >= 2 for r in returns)
    assert {k: len(v) for k, v in per_policy.items()} == {"p0": 2, "p1": 2}
    with pytest.raises(UnknownPolicyError, match="unknown policy id 'p9'"):
        a.get_policy("p9")
    grads, info = a.sample_and_compute_gradients()
    assert set(grads) == {"p0", "p1"} and info["count"] == 8
    a.apply_gradients(grads)
    assert a.weights_version == {"p0": 3, "p1": 3}
    assert a.ping() == "ok" and "p0" in repr(a)
    a.stop()


@pytest.mark.parametrize("runtime_name", ["inline", "process"])
def test_worker_set_rollouts_weights_and_training(runtime_name):
    kwargs = dict(env=MA_CARTPOLE, env_config={"num_agents": 2}, num_envs=2,
                  rollout_fragment_length=10, seed=0,
                  policy_factories={"p0": torch_factory, "p1": torch_factory},
                  policy_mapping_fn=lambda agent: "p0" if agent.endswith("0") else "p1")
    with get_runtime(runtime_name) as rt:
        workers = WorkerSet(rt, 2, kwargs, worker_cls=MultiAgentRolloutWorker)
        try:
            seen: list[MultiAgentBatch] = []
            train = (ParallelRollouts(workers, mode="bulk_sync")
                     .for_each(lambda b: seen.append(b) or b)
                     .for_each(SelectExperiences(["p1"]))
                     .for_each(TrainOneStep(workers, num_epochs=1, policy_id="p1")))
            p1, stats = next(train)
            batch = seen[0]
            assert isinstance(batch, MultiAgentBatch) and batch.count == 2 * 2 * 10
            assert set(batch.policy_batches) == {"p0", "p1"}
            assert stats["num_grad_updates"] == 1 and p1.count == batch.agent_steps() // 2
            assert set(train.metrics.info["learner"]) == {"p1"}
            local = workers.local_worker()
            assert local.weights_version == {"p0": 0, "p1": 1}
            versions = workers.foreach_worker(lambda w: w.weights_version, local=False)
            assert versions == [{"p0": 0, "p1": 1}] * 2
            for slot in split_env_id(batch.policy_batches["p1"][SB.ENV_ID])[1].tolist():
                assert slot == 1
            assert AGENT_SLOTS == 1 << 16
        finally:
            workers.stop()
