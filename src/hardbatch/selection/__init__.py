"""Batch-selection policies (the paper's rule, its controls and its peers) and the DataLoader sampler that runs them.

Every policy follows the small protocol of :class:`~hardbatch.selection.policy.Policy`: plan a pass of
steps before loading, optionally weigh a loaded batch from its no-grad losses, observe each step's
losses, and save/restore its state. A policy is one file of this package, registered with ``@register``;
``POLICIES`` maps the names the CLI accepts to the classes.
"""

from __future__ import annotations

import dataclasses

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import derive_seed, fixed_partition, num_selected, top_k_batches
from hardbatch.params import check_params
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import POLICIES, load_policies, register
from hardbatch.selection.sampler import HardBatchSampler, TrainingDiverged

load_policies()

from hardbatch.selection.cyclic import CyclicPolicy  # noqa: E402
from hardbatch.selection.hardbatch import HighLossPolicy  # noqa: E402
from hardbatch.selection.infobatch import InfoBatchPolicy  # noqa: E402
from hardbatch.selection.random_subset import RandomSubsetPolicy  # noqa: E402
from hardbatch.selection.selective_backprop import SelectiveBackpropPolicy  # noqa: E402
from hardbatch.selection.uniform import UniformPolicy  # noqa: E402


def policy_params(name: str) -> tuple[str, ...]:
    """The names of policy ``name``'s own hyper-parameters (its ``Params`` fields)."""
    return tuple(f.name for f in dataclasses.fields(POLICIES[name].Params))


def create_policy(name: str, batches: int | torch.Tensor, delta: float = 1.0, seed: int = 0, *,
                  num_samples: int | None = None, epochs: int = 1, **params) -> Policy:
    """Build a policy by name; unknown names list the valid ones.

    ``batches``: the fixed partition (N, B) of sample indices, or just N; ``params``: the policy's own
    hyper-parameters by their field names (``trim_top``, ``beta``, ...), each checked against its declared
    range; a hyper-parameter the policy does not use is refused.
    """
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    cls = POLICIES[name]
    if not cls.uses_delta and delta != 1.0:
        raise UsageError(f"policy {name!r} does not use delta (got {delta}); policies that do: "
                         f"{', '.join(n for n, c in POLICIES.items() if c.uses_delta)}")
    unused = [p for p in params if p not in policy_params(name)]
    if unused:
        raise UsageError(f"policy {name!r} does not use {', '.join(unused)}; it takes: "
                         f"{', '.join(policy_params(name)) or 'no hyper-parameters'}")
    values = cls.Params(**params)
    check_params(values)
    common = dict(num_samples=num_samples, seed=seed, epochs=epochs)
    kwargs = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    if cls.uses_delta:
        return cls(batches, delta, **kwargs, **common)
    return cls(batches, **kwargs, **common)


__all__ = [
    "POLICIES", "CyclicPolicy", "HardBatchSampler", "HighLossPolicy", "InfoBatchPolicy", "Policy", "RandomSubsetPolicy",
    "SelectiveBackpropPolicy", "Step", "TrainingDiverged", "UniformPolicy", "create_policy", "derive_seed",
    "fixed_partition", "num_selected", "policy_params", "register", "top_k_batches",
]
