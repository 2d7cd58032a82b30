"""persaes: learn one person's taste in photos from pairwise answers, retouch toward it.

The main entry points::

    from persaes import load_scorer, AestheticLoss
    scorer = load_scorer("generic")            # or a personal profile .safetensors
    loss = AestheticLoss("me.safetensors")     # 10 − f(x), lower is better
"""

from persaes.core.aesthetic_loss import AestheticLoss, aesthetic_loss
from persaes.core.backbones import create_backbone, get_spec, list_backbones
from persaes.core.losses import emd_loss, exp_pair_loss, hinge_pair_loss, logistic_pair_loss
from persaes.core.personalize import personalize
from persaes.core.scorer import Scorer, load_scorer

__all__ = [
    "AestheticLoss",
    "Scorer",
    "aesthetic_loss",
    "create_backbone",
    "emd_loss",
    "exp_pair_loss",
    "get_spec",
    "hinge_pair_loss",
    "list_backbones",
    "load_scorer",
    "logistic_pair_loss",
    "personalize",
]
