"""Selection policies as objects: the paper's rule, its controls and its peers, each a class whose constructor
holds only its hyper-parameters (``hardbatch.policies.InfoBatch(prune_ratio=0.5)``).

Pass one to :class:`hardbatch.HardBatchSampler` (``policy=...``), which binds it to the data; or name it by its
registered string (``policy="infobatch"``, ``--policy infobatch``). ``POLICIES`` maps those names to the classes;
``create_policy(name, **params)`` builds one by name. Every policy follows the small protocol of
:class:`~hardbatch.policies.base.Policy`; a new policy is one file of this package, registered with ``@register``.
"""

from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.bls import BLS
from hardbatch.policies.composer_sb import ComposerSB
from hardbatch.policies.cyclic import Cyclic
from hardbatch.policies.hard_batch import HardBatch
from hardbatch.policies.ies import IES
from hardbatch.policies.infobatch import InfoBatch
from hardbatch.policies.random_subset import Random
from hardbatch.policies.registry import POLICIES, create_policy, defaults, load_policies, policy_class, register
from hardbatch.policies.rho_loss import RhoLoss, irreducible_losses
from hardbatch.policies.rs2 import RS2
from hardbatch.policies.selective_backprop import SelectiveBackprop
from hardbatch.policies.seta import SeTa
from hardbatch.policies.uniform import Uniform

load_policies()  # every policy file of the package registered, in the registry's listing order

__all__ = [
    "BLS",
    "IES",
    "POLICIES",
    "RS2",
    "ComposerSB",
    "Cyclic",
    "HardBatch",
    "InfoBatch",
    "Policy",
    "Random",
    "RhoLoss",
    "Round",
    "SeTa",
    "SelectiveBackprop",
    "Step",
    "Uniform",
    "create_policy",
    "defaults",
    "irreducible_losses",
    "load_policies",
    "policy_class",
    "register",
]
