"""Batch-selection policies (the paper's rule, its controls and its peers) and the DataLoader sampler that runs them.

Every policy follows the small protocol of :class:`~hardbatch.selection.policy.Policy`: plan a pass of
steps before loading, optionally weigh a loaded batch from its no-grad losses, observe each step's
losses, and save/restore its state. ``POLICIES`` maps the names the CLI accepts to the classes.
"""

from __future__ import annotations

import torch

from hardbatch.config import POLICY_PARAMS, UsageError
from hardbatch.selection.cyclic import CyclicPolicy
from hardbatch.selection.functional import derive_seed, fixed_partition, num_selected, top_k_batches
from hardbatch.selection.hardbatch import HighLossPolicy
from hardbatch.selection.infobatch import InfoBatchPolicy
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.random_subset import RandomSubsetPolicy
from hardbatch.selection.sampler import HardBatchSampler
from hardbatch.selection.selective_backprop import SelectiveBackpropPolicy
from hardbatch.selection.uniform import UniformPolicy

POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Add a policy class under its ``name``; a name can be registered once."""
    if cls.name in POLICIES:
        raise ValueError(f"policy {cls.name!r} is already registered")
    POLICIES[cls.name] = cls
    return cls


for _cls in (HighLossPolicy, RandomSubsetPolicy, CyclicPolicy, UniformPolicy, SelectiveBackpropPolicy, InfoBatchPolicy):
    register(_cls)

# RunConfig field -> the policy's constructor argument
_ARGUMENTS = {"rescore": "rescore", "repartition": "repartition", "trim_top": "trim_top", "mix": "mix",
              "beta": "beta", "loss_history": "history", "prune_ratio": "ratio", "anneal": "anneal"}


def create_policy(name: str, batches: int | torch.Tensor, delta: float = 1.0, seed: int = 0, *,
                  num_samples: int | None = None, epochs: int = 1, **params) -> Policy:
    """Build a policy by name; unknown names list the valid ones.

    ``batches``: the fixed partition (N, B) of sample indices, or just N; ``params``: the policy's own
    hyper-parameters by their RunConfig names (``trim_top``, ``beta``, ...); a hyper-parameter the policy
    does not use is refused.
    """
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    cls = POLICIES[name]
    if not cls.uses_delta and delta != 1.0:
        raise UsageError(f"policy {name!r} does not use delta (got {delta}); policies that do: "
                         f"{', '.join(n for n, c in POLICIES.items() if c.uses_delta)}")
    unused = [p for p in params if p not in POLICY_PARAMS[name]]
    if unused:
        raise UsageError(f"policy {name!r} does not use {', '.join(unused)}; it takes: "
                         f"{', '.join(POLICY_PARAMS[name]) or 'no hyper-parameters'}")
    kwargs = {_ARGUMENTS[p]: v for p, v in params.items()}
    common = dict(num_samples=num_samples, seed=seed, epochs=epochs)
    if cls.uses_delta:
        return cls(batches, delta, **kwargs, **common)
    return cls(batches, **kwargs, **common)


__all__ = [
    "POLICIES", "CyclicPolicy", "HardBatchSampler", "HighLossPolicy", "InfoBatchPolicy", "Policy", "RandomSubsetPolicy",
    "SelectiveBackpropPolicy", "Step", "UniformPolicy", "create_policy", "derive_seed", "fixed_partition",
    "num_selected", "register", "top_k_batches",
]
