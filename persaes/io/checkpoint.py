"""Weights and profiles on disk: safetensors tensors plus JSON metadata, never pickle.

A checkpoint holds the head's tensors (``head.*``) and, after a full fine-tune, the
backbone's (``backbone.*``). Its metadata (the safetensors header's ``"persaes"`` entry)
says which backbone and preprocessing it belongs to, the head's settings, the bins and
score range, what it was trained on, with which command and version, and the SHA-256 of
the tensors. Loading checks all of it (and that every value is finite) and refuses a
mismatch, a damaged or edited file, with a one-line message.

``created`` is the time of writing, or ``$SOURCE_DATE_EPOCH`` when set, so that the same
inputs and seed give a byte-identical file.

Example::

    >>> save_checkpoint("profile.safetensors", model, {"kind": "profile"})   # doctest: +SKIP
    >>> model, meta = load_model("profile.safetensors")                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from persaes.core.backbones import BackboneError, create_backbone, get_spec
from persaes.core.model import BINS, SCORE_RANGE, AestheticModel, AttentionHead
from persaes.io.atomic import atomic_path

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
    """
    include_backbone = include_backbone or metadata.get("backbone_weights") == "random"
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if include_backbone:
        tensors.update({f"backbone.{k}": v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()})
    metadata = {**metadata, "includes_backbone": include_backbone, "tensors_sha256": tensors_digest(tensors)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"persaes": json.dumps(metadata, sort_keys=True)})
    return path


def is_pickle(path: Path) -> bool:
    """Whether a file starts like a pickle (protocol 2+) or a ``torch.save`` zip; only read to word an error."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    return start[:1] == b"\x80" or start == b"PK\x03\x04"


def load_error(exc: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (its first line only names the module)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and validated metadata of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights or profile file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if is_pickle(path):
            raise CheckpointError(f"{path}: a pickle or torch.save file; persaes loads only safetensors (pickles can "
                                  "run code)") from None
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        meta = json.loads(header["persaes"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: no persaes metadata in the safetensors header") from None
    if isinstance(meta, dict) and meta.get("format") in _OLDER:
        raise CheckpointError(f"{path}: made by an older persaes (format {meta['format']!r}); "
                              "run `persaes personalize` again on the same answers to rebuild it")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise CheckpointError(f"{path}: holds NaN or infinite values (damaged file)")
    if "tensors_sha256" in meta and meta["tensors_sha256"] != tensors_digest(tensors):
        raise CheckpointError(f"{path}: tensors do not match the checksum in the metadata (damaged or edited file)")
    head = meta.get("head")
    if not isinstance(head, dict) or any(k not in head for k in _HEAD_KEYS):
        raise CheckpointError(f"{path}: metadata lacks the head settings {_HEAD_KEYS}")
    if meta.get("bins") != BINS or list(meta.get("score_range", [])) != list(SCORE_RANGE):
        raise CheckpointError(f"{path}: expects {meta.get('bins')} bins over {meta.get('score_range')}, persaes uses {BINS} over {list(SCORE_RANGE)}")
    try:
        spec = get_spec(str(meta.get("backbone")))
    except BackboneError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if meta.get("preprocessing") != spec.preprocessing():
        raise CheckpointError(f"{path}: preprocessing {meta.get('preprocessing')} does not match backbone {spec.name}")
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
