"""hardbatch: train neural networks on their highest-loss mini-batches (Sahayam et al., arXiv 2304.03486)."""

__version__ = "0.1.0"

from hardbatch.config import RunConfig, UsageError  # noqa: E402
from hardbatch.selection import HardBatchSampler, HighLossPolicy, RandomSubsetPolicy, fixed_partition, top_k_batches  # noqa: E402

__all__ = [
    "HardBatchSampler",
    "HighLossPolicy",
    "RandomSubsetPolicy",
    "RunConfig",
    "UsageError",
    "fixed_partition",
    "top_k_batches",
    "__version__",
]
