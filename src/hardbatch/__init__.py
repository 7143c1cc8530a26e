"""hardbatch: train neural networks on their highest-loss mini-batches (Sahayam et al., arXiv 2304.03486), and run
its controls and peers through the same loop.

The quickstart, for every registered policy::

    sampler = hardbatch.HardBatchSampler(len(train_set), batch_size=128, epochs=10,
                                         policy=hardbatch.policies.HardBatch(delta=0.5))
    loader = DataLoader(train_set, batch_sampler=sampler)
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from hardbatch import functional, losses, policies
from hardbatch.config import RunConfig
from hardbatch.cost import CostMeter
from hardbatch.errors import TrainingDiverged, UsageError
from hardbatch.policies import Policy, create_policy
from hardbatch.sampler import HardBatchSampler
from hardbatch.step import training_loss
from hardbatch.stream import InBatchSelector
from hardbatch.training import evaluate, fit
from hardbatch.version import __version__

__all__ = [
    "CostMeter",
    "HardBatchSampler",
    "InBatchSelector",
    "Policy",
    "RunConfig",
    "TrainingDiverged",
    "UsageError",
    "__version__",
    "create_policy",
    "evaluate",
    "fit",
    "functional",
    "losses",
    "policies",
    "training_loss",
]
