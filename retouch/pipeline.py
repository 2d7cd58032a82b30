"""Chains of retouching ops: the optimisable :class:`Retoucher` and the feed-forward :class:`RetouchNet`.

Every op module (:class:`~retouch.exposure.ExposureCurves`, :class:`~retouch.color.ColorAdjust`,
:class:`~retouch.dehaze.Dehaze`) holds low-resolution or global raw parameters with a leading batch dimension of 1,
starts at the identity and exposes ``render(image, params)``, which applies the op with any raw parameters of the same
names (batch 1 or ``B``), and ``regularization(params=None)``. A chain therefore applies to any image size, and a
network can predict per-image raw parameters and render them with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .bands import BAND_PIXELS, map_bands
from .color import ColorAdjust, check_image
from .dehaze import DEHAZE_WORK_SIZE, Dehaze, resize_to_fit
from .exposure import ExposureCurves

__all__ = ["OPS", "RetouchNet", "Retoucher"]

#: Op names in the order they are applied: haze removal first (it assumes the camera's tones), then tones, then colour.
OPS: tuple[str, ...] = ("dehaze", "exposure", "color")


class Retoucher(nn.Module):
    r"""A chain of learnable retouching ops, applied in the fixed order of :data:`OPS` (dehaze, exposure, color).

    The parameters are global or coarse grids, so a ``Retoucher`` optimised on a small copy applies unchanged to the
    full-size image. Its parameters are named ``"<op>.<name>"``, e.g. ``"exposure.raw"``.

    Args:
        ops: names of the ops to use, a subset of :data:`OPS` in any order.
        exposure_iterations: curve iterations of :class:`~retouch.exposure.ExposureCurves`.
        exposure_grid: ``(h, w)`` grid of the exposure curves; ``(1, 1)`` for global curves.
        lut_size: LUT side of :class:`~retouch.color.ColorAdjust`.
        dehaze_patch: dark-channel patch of :class:`~retouch.dehaze.Dehaze`.
        dehaze_work_size: longest side of the copy :class:`~retouch.dehaze.Dehaze` estimates haze on.

    Example:
        >>> retoucher = Retoucher()
        >>> image = torch.rand(1, 3, 32, 32)
        >>> retoucher(image).allclose(image, atol=1e-5)
        True
    """

    def __init__(
        self,
        ops: Iterable[str] = OPS,
        *,
        exposure_iterations: int = 4,
        exposure_grid: tuple[int, int] = (1, 1),
        lut_size: int = 9,
        dehaze_patch: int = 15,
        dehaze_work_size: int = DEHAZE_WORK_SIZE,
    ) -> None:
        super().__init__()
        chosen = set(ops)
        if not chosen or not chosen <= set(OPS):
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {tuple(ops)}")
        self.ops = tuple(name for name in OPS if name in chosen)
        builders = {
            "dehaze": lambda: Dehaze(patch=dehaze_patch, work_size=dehaze_work_size),
            "exposure": lambda: ExposureCurves(exposure_iterations, exposure_grid),
            "color": lambda: ColorAdjust(lut_size),
        }
        for name in self.ops:
            self.add_module(name, builders[name]())

    def render(self, image: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply the chain with raw ``params`` keyed ``"<op>.<name>"`` (batch 1 or B) to :math:`(B, 3, H, W)`."""
        check_image(image)
        for name in self.ops:
            image = getattr(self, name).render(image, _sub_params(params, name))
        return image

    def forward(self, image: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` in :math:`[0, 1]`, any size -> same shape and range."""
        return self.render(image, dict(self.named_parameters()))

    @torch.no_grad()
    def retouch_full(self, image: Tensor, *, band_pixels: int = BAND_PIXELS) -> Tensor:
        r"""Apply the edit to a (full-size) image without tracking gradients, whatever size it was optimised at.

        The image goes through the chain in bands of rows (:func:`~retouch.bands.map_bands`, each op's ``stage``):
        the output equals :meth:`forward`'s up to float rounding (far below 1/255), at a fraction of its time and
        memory. Dehaze, first in :data:`OPS`, makes its haze estimate once on the whole image.

        Args:
            image: :math:`(B, 3, H, W)` in :math:`[0, 1]`.
            band_pixels: pixels per band (:data:`~retouch.bands.BAND_PIXELS`).

        Returns:
            :math:`(B, 3, H, W)` in :math:`[0, 1]`, a new tensor.
        """
        check_image(image)
        # each op's stage reads only its input's size, except dehaze's, which reads the photo: it comes first
        stages = [getattr(self, name).stage(image) for name in self.ops]
        return map_bands(image, stages, band_pixels)

    def regularization(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Scalar sum of the ops' regularisers, for this module's or the given raw ``params``."""
        params = dict(self.named_parameters()) if params is None else params
        terms = [getattr(self, name).regularization(_sub_params(params, name)) for name in self.ops]
        return torch.stack(terms).sum()

    def state(self) -> dict[str, Tensor]:
        """Flat ``{"<op>.<name>": tensor}`` dict of detached, contiguous CPU copies (ready for safetensors)."""
        return {name: value.detach().cpu().contiguous().clone() for name, value in self.state_dict().items()}

    @classmethod
    def shaped_like(
        cls, state: Mapping[str, Tensor], *, dehaze_patch: int = 15, dehaze_work_size: int = DEHAZE_WORK_SIZE
    ) -> Retoucher:
        """Return a new ``Retoucher`` at the identity with ``state``'s ops, curve iterations, grid and LUT size.

        The dehaze settings are not stored in the tensors and are passed as arguments.
        """
        ops = {key.split(".", 1)[0] for key in state}
        if not ops or not ops <= set(OPS):
            raise ValueError(f"state keys must start with one of {OPS}, got {sorted(state)}")
        kwargs: dict = {"dehaze_patch": dehaze_patch, "dehaze_work_size": dehaze_work_size}
        if "exposure" in ops:
            raw = _require(state, "exposure.raw")
            kwargs.update(exposure_iterations=raw.shape[1] // 3, exposure_grid=tuple(raw.shape[-2:]))
        if "color" in ops:
            kwargs["lut_size"] = _require(state, "color.lut_residual").shape[-1]
        return cls(ops, **kwargs)

    @classmethod
    def from_state(
        cls, state: Mapping[str, Tensor], *, dehaze_patch: int = 15, dehaze_work_size: int = DEHAZE_WORK_SIZE
    ) -> Retoucher:
        """Rebuild a ``Retoucher`` from :meth:`state` (:meth:`shaped_like` it, with its values)."""
        retoucher = cls.shaped_like(state, dehaze_patch=dehaze_patch, dehaze_work_size=dehaze_work_size)
        try:
            retoucher.load_state_dict(dict(state), strict=True)
        except RuntimeError as error:
            raise ValueError(f"state does not match a Retoucher with ops {retoucher.ops}: {error}") from error
        return retoucher


def _require(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ValueError(f"state is missing {key!r}")
    return state[key]


def _sub_params(params: Mapping[str, Tensor], op: str) -> dict[str, Tensor]:
    """The ``"<op>.<name>"`` entries of ``params`` as ``{name: tensor}``."""
    prefix = f"{op}."
    return {key[len(prefix) :]: value for key, value in params.items() if key.startswith(prefix)}


class RetouchNet(nn.Module):
    r"""Feed-forward network that predicts per-image retouching parameters and applies them in one pass.

    A downscaled copy (longer side at most ``input_size``) goes through four stride-2 3x3 convolutions, global
    average pooling and a linear head. The head predicts, per image, an offset to the raw parameters of an inner
    :class:`Retoucher` (same parameterisation as the op modules; the inner parameters act as learnable biases). The
    head starts at zero, so the untrained network is the identity. The predicted edit is rendered on the full-size
    input.

    Args:
        ops: op names, as for :class:`Retoucher`.
        input_size: longest side of the copy the encoder sees.
        width: channels of the first convolution (doubled twice).
        **retoucher_kwargs: the other :class:`Retoucher` arguments (exposure grid, LUT size, ...).

    Example:
        >>> net = RetouchNet(("exposure", "color"))
        >>> image = torch.rand(2, 3, 96, 64)
        >>> net(image).allclose(image, atol=1e-5)
        True
    """

    def __init__(
        self,
        ops: Iterable[str] = OPS,
        *,
        input_size: int = 128,
        width: int = 16,
        **retoucher_kwargs: object,
    ) -> None:
        super().__init__()
        if input_size < 1 or width < 1:
            raise ValueError(f"input_size and width must be positive, got {input_size} and {width}")
        self.input_size = input_size
        self.retoucher = Retoucher(ops, **retoucher_kwargs)  # type: ignore[arg-type]
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._shapes = {name: tuple(p.shape[1:]) for name, p in self.retoucher.named_parameters()}
        self.head = nn.Linear(channels[-1], sum(torch.Size(s).numel() for s in self._shapes.values()), bias=False)
        nn.init.zeros_(self.head.weight)

    def predict(self, image: Tensor) -> dict[str, Tensor]:
        """Per-image raw parameters ``{"<op>.<name>": (B, ...)}`` for :math:`(B, 3, H, W)` in :math:`[0, 1]`."""
        check_image(image)
        small = resize_to_fit(image, self.input_size)
        offsets = self.head(self.encoder((small - 0.5) / 0.25))
        sizes = [torch.Size(s).numel() for s in self._shapes.values()]
        base = dict(self.retoucher.named_parameters())
        return {
            name: base[name] + chunk.reshape(-1, *shape)
            for (name, shape), chunk in zip(self._shapes.items(), offsets.split(sizes, dim=1))
        }

    def forward(self, image: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` in :math:`[0, 1]`, any size -> retouched image of the same shape and range."""
        return self.retoucher.render(image, self.predict(image))
