"""Selection policies as objects: the paper's rule, its controls and its peers, each a class whose constructor
holds only its hyper-parameters (``hardbatch.policies.InfoBatch(prune_ratio=0.5)``).

Pass one to :class:`hardbatch.HardBatchSampler` (``policy=...``), which binds it to the data; or name it by its
registered string (``policy="infobatch"``, ``--policy infobatch``). ``POLICIES`` maps those names to the classes;
``create_policy(name, **params)`` builds one by name. Every policy follows the small protocol of
:class:`~hardbatch.policies.base.Policy`; a new policy is one file of this package, registered with ``@register``.
"""

from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import POLICIES, create_policy, defaults, load_policies, policy_class, register

load_policies()

from hardbatch.policies.bls import BLS  # noqa: E402
from hardbatch.policies.composer_sb import ComposerSB  # noqa: E402
from hardbatch.policies.cyclic import Cyclic  # noqa: E402
from hardbatch.policies.hard_batch import HardBatch  # noqa: E402
from hardbatch.policies.ies import IES  # noqa: E402
from hardbatch.policies.infobatch import InfoBatch  # noqa: E402
from hardbatch.policies.random_subset import Random  # noqa: E402
from hardbatch.policies.rho_loss import RhoLoss, irreducible_losses  # noqa: E402
from hardbatch.policies.rs2 import RS2  # noqa: E402
from hardbatch.policies.selective_backprop import SelectiveBackprop  # noqa: E402
from hardbatch.policies.seta import SeTa  # noqa: E402
from hardbatch.policies.uniform import Uniform  # noqa: E402

__all__ = [
    "BLS", "POLICIES", "RS2", "ComposerSB", "Cyclic", "HardBatch", "IES", "InfoBatch", "Policy", "Random", "RhoLoss", "Round",
    "SelectiveBackprop", "SeTa", "Step", "Uniform", "create_policy", "defaults", "irreducible_losses",
    "load_policies", "policy_class", "register",
]
