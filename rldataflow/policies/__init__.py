"""Policies: torch models, action distributions, trajectory postprocessing, ``TorchPolicy``
(what rollout workers run) and its ``Learner`` (loss, optimizers, target networks, KL).

Example::

    import gymnasium, numpy as np
    from rldataflow.policies import TorchPolicy

    obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    policy = TorchPolicy(obs_space, gymnasium.spaces.Discrete(2), {"lr": 1e-3}, seed=0)
    actions, extras = policy.compute_actions(np.zeros((16, 4), np.float32))
"""

from rldataflow.policies.distributions import (
    ActionDistribution,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    dist_class_for,
)
from rldataflow.policies.kl_controller import AdaptiveKLCoeff
from rldataflow.policies.learner import Learner, MultiLossLearner, make_optimizer
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.policies.models import CNN, MLP, ActorCriticModel, QModel, init_layer, make_encoder
from rldataflow.policies.policy import (
    DEFAULT_POLICY_CONFIG,
    LossFn,
    ModelFactory,
    PostprocessFn,
    TorchPolicy,
    default_model_factory,
)
from rldataflow.policies.postprocessing import (
    batch_segment_ends,
    compute_advantages,
    compute_discounted_returns,
    compute_gae,
    compute_nstep,
    segment_end_mask,
)
from rldataflow.policies.target_network import TargetNetwork

__all__ = [
    "CNN",
    "DEFAULT_POLICY_CONFIG",
    "MLP",
    "ActionDistribution",
    "AdaptiveKLCoeff",
    "ActorCriticModel",
    "Categorical",
    "DiagGaussian",
    "Learner",
    "LossFn",
    "ModelFactory",
    "MultiLossLearner",
    "MultiCategorical",
    "PostprocessFn",
    "QModel",
    "TargetNetwork",
    "TorchPolicy",
    "actor_critic_loss",
    "batch_segment_ends",
    "compute_advantages",
    "compute_discounted_returns",
    "compute_gae",
    "compute_nstep",
    "default_model_factory",
    "dist_class_for",
    "init_layer",
    "make_encoder",
    "make_optimizer",
    "segment_end_mask",
]
