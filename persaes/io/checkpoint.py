"""Weights and profiles on disk: safetensors tensors plus JSON metadata, never pickle.

A checkpoint holds the head's tensors (``head.*``) and, after a full fine-tune, the
backbone's (``backbone.*``). Its metadata (the safetensors header's ``"persaes"`` entry)
says which backbone and preprocessing it belongs to, the head's settings, the bins and
score range, what it was trained on, with which command and version, and the SHA-256 of
the tensors. Loading checks all of it (and that every value is finite) and refuses a
mismatch, a damaged or edited file, with a one-line message.

``created`` is the time of writing, or ``$SOURCE_DATE_EPOCH`` when set, so that the same
inputs and seed give a byte-identical file.

Example:
    >>> import tempfile
    >>> spec = get_spec("efficientnet_lite2")
    >>> model = AestheticModel(spec, create_backbone(spec.name), AttentionHead(spec.channels))
    >>> path = Path(tempfile.mkdtemp()) / "profile.safetensors"
    >>> path = save_checkpoint(path, model, model_metadata(model, "pretrained", kind="profile"))
    >>> loaded, meta = load_model(path)
    >>> meta["kind"], meta["backbone"], meta["includes_backbone"]
    ('profile', 'efficientnet_lite2', False)
    >>> all(torch.equal(a, b) for a, b in zip(loaded.head.state_dict().values(), model.head.state_dict().values()))
    True
    >>> data = bytearray(path.read_bytes())
    >>> data[-1] ^= 1                                          # one bit of a weight flipped
    >>> _ = path.write_bytes(data)
    >>> try:
    ...     load_model(path)
    ... except CheckpointError as err:
    ...     print(str(err).split(": ", 1)[1])
    tensors do not match the checksum in the metadata (damaged or edited file)
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from persaes.core.backbones import BackboneError, create_backbone, get_spec
from persaes.core.model import BINS, SCORE_RANGE, AestheticModel, AttentionHead
from persaes.io.safetensors_file import SafetensorsFileError, read_safetensors, write_safetensors

FORMAT = "persaes-checkpoint/3"
# Version 1 heads had no quality branch, version 2 one without its CNN; their profiles must be
# rebuilt from the answers.
_OLDER = {"persaes-checkpoint/1", "persaes-checkpoint/2"}
_HEAD_KEYS = ("hidden", "attention", "dropout", "stats_hidden", "quality_width")


class CheckpointError(ValueError):
    """A weights or profile file that cannot be used; the message names the file."""


def package_version() -> str:
    """The installed persaes version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("persaes")
    except PackageNotFoundError:
        return "unknown"


def _creation_time() -> float:
    """Now, or ``$SOURCE_DATE_EPOCH`` (reproducible builds' convention) when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return float(epoch) if epoch.isdigit() else time.time()


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_metadata(model: AestheticModel, backbone_weights: str, **extra: Any) -> dict[str, Any]:
    """The metadata describing ``model``, plus ``extra`` fields (training data, command, ...)."""
    head = model.head
    meta: dict[str, Any] = {
        "format": FORMAT,
        "backbone": model.spec.name,
        "backbone_weights": backbone_weights,
        "head": {"hidden": head.hidden, "attention": head.attention, "dropout": head.dropout.p,
                 "stats_hidden": head.stats_hidden, "quality_width": head.quality_width,
                 "taste": head.taste is not None},
        "bins": BINS,
        "score_range": list(SCORE_RANGE),
        "preprocessing": model.spec.preprocessing(),
        "version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_creation_time())),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    meta.update(extra)
    return meta


def save_checkpoint(path: str | os.PathLike[str], model: AestheticModel, metadata: dict[str, Any],
                    include_backbone: bool = False) -> Path:
    """Write ``model``'s head (and backbone if asked) with ``metadata`` atomically to ``path``.

    A randomly initialised backbone cannot be rebuilt from its name, so it is always saved.

    Args:
        path: the ``.safetensors`` file to (re)write; its folder is created if missing.
        model: the model whose weights are written.
        metadata: its description, usually :func:`model_metadata`'s.
        include_backbone: also write the backbone's tensors (after a full fine-tune).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    include_backbone = include_backbone or metadata.get("backbone_weights") == "random"
    tensors = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    if include_backbone:
        tensors.update({f"backbone.{k}": v for k, v in model.backbone.state_dict().items()})
    metadata = {**metadata, "includes_backbone": include_backbone, "tensors_sha256": tensors_digest(tensors)}
    return write_safetensors(path, tensors, metadata)


def load_error(exc: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (its first line only names the module)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__


def _read_file(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint file, unchecked."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights or profile file")
    try:
        return read_safetensors(path)
    except SafetensorsFileError as exc:
        raise CheckpointError(str(exc)) from None


def _check_format(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a file of another format, or of an older one that must be rebuilt."""
    if meta.get("format") in _OLDER:
        raise CheckpointError(f"{path}: made by an older persaes (format {meta['format']!r}); "
                              "run `persaes personalize` again on the same answers to rebuild it")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}")


def _check_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Refuse non-finite weights and tensors that do not match the recorded checksum."""
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise CheckpointError(f"{path}: holds NaN or infinite values (damaged file)")
    if "tensors_sha256" in meta and meta["tensors_sha256"] != tensors_digest(tensors):
        raise CheckpointError(f"{path}: tensors do not match the checksum in the metadata (damaged or edited file)")


def _check_settings(path: Path, meta: dict[str, Any]) -> None:
    """Refuse metadata without the head's settings, or with bins, backbone or preprocessing persaes can't use."""
    head = meta.get("head")
    if not isinstance(head, dict) or any(k not in head for k in _HEAD_KEYS):
        raise CheckpointError(f"{path}: metadata lacks the head settings {_HEAD_KEYS}")
    if meta.get("bins") != BINS or list(meta.get("score_range", [])) != list(SCORE_RANGE):
        raise CheckpointError(f"{path}: expects {meta.get('bins')} bins over {meta.get('score_range')}, "
                              f"persaes uses {BINS} over {list(SCORE_RANGE)}")
    try:
        spec = get_spec(str(meta.get("backbone")))
    except BackboneError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if meta.get("preprocessing") != spec.preprocessing():
        raise CheckpointError(f"{path}: preprocessing {meta.get('preprocessing')} does not match backbone {spec.name}")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and validated metadata of a checkpoint file.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``(tensors, metadata)``.

    Raises:
        CheckpointError: a missing, unreadable, pickled, damaged or edited file, another
            format, or settings persaes cannot use; one line naming the file.
    """
    path = Path(path)
    tensors, meta = _read_file(path)
    _check_format(path, meta)
    _check_tensors(path, tensors, meta)
    _check_settings(path, meta)
    return tensors, meta


def load_model(path: str | os.PathLike[str], backbone: str | None = None, backbone_weights: str | None = None,
               device: torch.device | str = "cpu") -> tuple[AestheticModel, dict[str, Any]]:
    """Build the :class:`AestheticModel` a checkpoint describes, in eval mode.

    Args:
        path: the ``.safetensors`` file.
        backbone: if given, the backbone the caller expects; another one is refused.
        backbone_weights: where the backbone's own weights come from (``"pretrained"``,
            ``"random"`` or a file); default: as recorded in the metadata.
        device: where the model goes.
    """
    tensors, meta = read_checkpoint(path)
    if backbone is not None and backbone != meta["backbone"]:
        raise CheckpointError(f"{path}: made for backbone {meta['backbone']}, not {backbone}")
    spec = get_spec(meta["backbone"])
    head = AttentionHead(spec.channels, **{k: meta["head"][k] for k in _HEAD_KEYS},
                         taste=meta["head"].get("taste", False))
    head_state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        head.load_state_dict(head_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not fit a {spec.name} head ({load_error(exc)})") from None
    weights = backbone_weights or meta.get("backbone_weights", "pretrained")
    if weights not in ("pretrained", "random") and not Path(weights).is_file():
        weights = "pretrained"
    net = create_backbone(spec.name, weights)
    if meta.get("includes_backbone"):
        net_state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        try:
            net.load_state_dict(net_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: backbone tensors do not fit {spec.name} ({load_error(exc)})") from None
    model = AestheticModel(spec, net, head).to(device).eval()
    return model, meta
