"""Trained retouching networks (:class:`retouch.RetouchNet`) on disk: safetensors plus JSON metadata.

The tensors are the network's state dict; the metadata (the safetensors header's ``"persaes"``
entry) holds the format, the operations, the encoder's input size and width, which rebuild the
network, plus what the caller records (profile, training data and settings). Loading refuses
another format, metadata that does not describe a network, and tensors that do not fit it, each
with one line naming the file.

Example::

    save_retouch_net("me-retoucher.safetensors", net, {"profile": "me.safetensors"})
    net, meta = load_retouch_net("me-retoucher.safetensors")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from persaes.io.checkpoint import load_error
from persaes.io.safetensors_file import SafetensorsFileError, read_safetensors, write_safetensors
from retouch import RetouchNet

__all__ = ["NET_FORMAT", "load_retouch_net", "save_retouch_net"]

NET_FORMAT = "persaes-retouchnet/1"
"""The ``format`` entry of a retouching model's metadata."""


def save_retouch_net(path: str | os.PathLike[str], net: RetouchNet, metadata: dict[str, Any]) -> Path:
    """Write a :class:`RetouchNet` as safetensors + JSON metadata, atomically.

    Args:
        path: the ``.safetensors`` file to (re)write; its folder is created if missing.
        net: the network.
        metadata: JSON-able entries to record besides the ones that rebuild the network.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> path = save_retouch_net(f"{tempfile.mkdtemp()}/net.safetensors", RetouchNet(("exposure",)), {})
        >>> load_retouch_net(path)[1]["ops"]
        ['exposure']
    """
    meta = {"format": NET_FORMAT, "ops": list(net.retoucher.ops), "input_size": net.input_size,
            "width": net.encoder[0].out_channels, **metadata}
    return write_safetensors(path, net.state_dict(), meta)


def _build(path: Path, meta: dict[str, Any]) -> RetouchNet:
    """The untrained network the metadata describes."""
    if meta.get("format") != NET_FORMAT:
        raise SafetensorsFileError(f"{path}: not a persaes retouching model (format {meta.get('format')!r})")
    try:
        return RetouchNet(meta["ops"], input_size=int(meta["input_size"]), width=int(meta["width"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SafetensorsFileError(
            f"{path}: metadata does not describe a retouching model ({type(exc).__name__}: {exc})") from None


def load_retouch_net(path: str | os.PathLike[str]) -> tuple[RetouchNet, dict[str, Any]]:
    """Read a :class:`RetouchNet` written by :func:`save_retouch_net`, in eval mode.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``(network, metadata)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        SafetensorsFileError: a pickle, an unreadable file, another format, metadata that does
            not describe a network, or tensors that do not fit it; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such retouching model file")
    tensors, meta = read_safetensors(path, what="retouching model")
    net = _build(path, meta)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SafetensorsFileError(f"{path}: tensors do not fit the model it describes ({load_error(exc)})") from None
    return net.eval(), meta
