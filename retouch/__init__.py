"""Differentiable retouching ops, protocol degradations, classic baselines and metrics.

Images are float tensors of shape ``(B, 3, H, W)`` holding sRGB-encoded RGB values in ``[0, 1]``.
"""

from .baselines import auto_gamma, dark_channel_dehaze, gray_world
from .color import ColorAdjust, apply_lut, identity_lut, saturation, white_balance
from .degrade import DEGRADATIONS, EDITS, LEVELS, OVER_PROCESSING, add_haze, degrade, expose, over_process, random_edit
from .dehaze import Dehaze, dark_channel, dehaze, estimate_airlight, guided_filter, recover, transmission
from .exposure import ExposureCurves, apply_curves, channel_spread
from .metrics import (
    TASTE_FEATURES,
    ciede2000,
    clipped_share,
    colourfulness,
    delta_e,
    near_neutral_mask,
    neutral_cast,
    neutral_chroma,
    new_clipping,
    psnr,
    soft_clipped_share,
    ssim,
    taste_features,
)
from .pipeline import OPS, Retoucher, RetouchNet

__all__ = [
    "DEGRADATIONS",
    "EDITS",
    "LEVELS",
    "OPS",
    "OVER_PROCESSING",
    "TASTE_FEATURES",
    "ColorAdjust",
    "Dehaze",
    "ExposureCurves",
    "RetouchNet",
    "Retoucher",
    "add_haze",
    "apply_curves",
    "apply_lut",
    "auto_gamma",
    "channel_spread",
    "ciede2000",
    "clipped_share",
    "colourfulness",
    "dark_channel",
    "dark_channel_dehaze",
    "degrade",
    "dehaze",
    "delta_e",
    "estimate_airlight",
    "expose",
    "gray_world",
    "guided_filter",
    "identity_lut",
    "near_neutral_mask",
    "neutral_cast",
    "neutral_chroma",
    "new_clipping",
    "over_process",
    "psnr",
    "random_edit",
    "recover",
    "saturation",
    "soft_clipped_share",
    "ssim",
    "taste_features",
    "transmission",
    "white_balance",
]
