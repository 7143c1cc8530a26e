"""hardbatch: train neural networks on their highest-loss mini-batches (Sahayam et al., arXiv 2304.03486)."""

__version__ = "0.1.0"

from hardbatch.config import RunConfig  # noqa: E402
from hardbatch.errors import UsageError
from hardbatch.selection import (  # noqa: E402
    POLICIES,
    HardBatchSampler,
    HighLossPolicy,
    Policy,
    RandomSubsetPolicy,
    create_policy,
    fixed_partition,
    top_k_batches,
)

__all__ = [
    "POLICIES",
    "Policy",
    "create_policy",
    "HardBatchSampler",
    "HighLossPolicy",
    "RandomSubsetPolicy",
    "RunConfig",
    "UsageError",
    "fixed_partition",
    "top_k_batches",
    "__version__",
]
