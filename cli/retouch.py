"""``persaes retouch`` and ``persaes train-retoucher``: photos retouched toward a taste."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click
import torch

from cli.common import device_option, printable, progress, user_errors, warn
from persaes.aesthetic_loss import AestheticLoss
from persaes.backbones import BackboneError
from persaes.images import ImageError, iter_images, load_image
from persaes.retouch_files import load_retouch_net, retouch_folder, save_retouch_net
from persaes.scorer import load_scorer
from retouch import OPS
from retouch.dehaze import resize_to_fit
from retouch.optimize import NET_SETTINGS, EditSettings, train_retouch_net


def parse_ops(text: str) -> tuple[str, ...]:
    ops = tuple(o.strip() for o in text.split(",") if o.strip())
    unknown = [o for o in ops if o not in OPS]
    if not ops or unknown:
        raise click.BadParameter(f"choose from {','.join(OPS)}; got {text!r}", param_hint="--ops")
    return ops


ops_option = click.option("--ops", default="exposure,color,dehaze", show_default=True,
                          help="Retouching ops to use, comma-separated.")
fidelity_option = click.option("--fidelity", default=EditSettings.fidelity, show_default=True,
                               type=click.FloatRange(0), help="How strongly fitted edits are held to the original "
                               "(mean absolute change); higher gives gentler edits, 0 lets the loss decide alone.")


@click.command("retouch")
@click.argument("in_dir", metavar="IN", type=click.Path(file_okay=False))
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--profile", default="generic", show_default=True, help="Personal profile (or shipped name) to retouch toward.")
@click.option("--base", default=None,
              help="Model whose retouch a profile's edit is made on top of [default: generic] ('none': on the "
                   "original photo). Not with --model, which retouches in one pass.")
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
              help="A retouching model from train-retoucher: one pass per photo instead of optimising.")
@ops_option
@click.option("--steps", default=EditSettings.steps, show_default=True, type=click.IntRange(0),
              help="Optimisation steps per photo.")
@fidelity_option
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def retouch_cmd(in_dir: str, out_dir: str, profile: str, base: str | None, model_path: str | None, ops: str, steps: int,
                fidelity: float, seed: int, device: str) -> None:
    """Retouch every photo under IN into OUT (same relative paths), toward a profile's taste.

    IN is never written to. Finished photos are skipped on a rerun, so an interrupted
    run resumes. OUT/scores.csv lists each photo's score before and after (under the profile).
    A profile's edit is fitted on top of the generic retouch (--base), so the generic
    corrections stay unless the profile's taste argues against them.

    \b
    Example:
      persaes retouch ~/Pictures/album ~/Pictures/retouched --profile me.safetensors
    """
    chosen = parse_ops(ops)
    if model_path and base is not None:
        raise click.UsageError("--base is for fitted edits; a --model retouches in one pass")
    base = base or "generic"
    scorer = load_scorer(profile, device=device)
    stacked = not model_path and base not in ("none", profile)
    base_scorer = load_scorer(base, device=device) if stacked else None
    net = None
    if model_path:
        net, _ = load_retouch_net(model_path)
        net = net.to(scorer.device)
    summary = retouch_folder(in_dir, out_dir, scorer, chosen, EditSettings(steps=steps, fidelity=fidelity), net, seed,
                             progress=lambda items, n: progress(items, n, "retouching"), on_error=warn,
                             model_name=Path(model_path).name if model_path else str(profile), base=base_scorer)
    click.echo(printable(f"{summary.done} photos retouched into {out_dir}, {summary.skipped} already done, "
                         f"{len(summary.failed)} failed"))
    if summary.failed:
        sys.exit(1)


def _batches(files: list[Path], size: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    order = files[:]
    random.Random(seed).shuffle(order)
    batch: list[torch.Tensor] = []
    for path in order:
        try:
            image = load_image(path, max_side=2 * size)[None]
        except ImageError as exc:
            warn(str(exc))
            continue
        batch.append(torch.nn.functional.interpolate(resize_to_fit(image, size), size=(size, size), mode="bilinear",
                                                     align_corners=False))
        if len(batch) == batch_size:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


@click.command("train-retoucher")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Retouching model to write (.safetensors).")
@click.option("--profile", default="generic", show_default=True, help="Profile whose taste the model learns.")
@ops_option
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--size", default=256, show_default=True, type=click.IntRange(32), help="Training crop side.")
@fidelity_option
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def train_retoucher_cmd(folder: str, out: str, profile: str, ops: str, epochs: int, batch_size: int, size: int,
                        fidelity: float, seed: int, device: str) -> None:
    """Train a small feed-forward retouching network over FOLDER against a profile's taste.

    \b
    Example:
      persaes train-retoucher ~/Pictures/album --out me-retoucher.safetensors --profile me.safetensors
      persaes retouch ~/Pictures/new ~/Pictures/new-retouched --model me-retoucher.safetensors
    """
    chosen = parse_ops(ops)
    files = list(iter_images([folder]))
    if not files:
        raise click.ClickException(f"{folder}: no photos found")
    loss = AestheticLoss(profile, device=device)
    steps = epochs * -(-len(files) // batch_size)
    settings = replace(NET_SETTINGS, fidelity=fidelity)
    with click.progressbar(length=steps, label="training", file=sys.stderr) as bar:
        net = train_retouch_net(lambda: _batches(files, size, batch_size, seed), loss, chosen, epochs, settings,
                                seed=seed, device=loss.scorer.device, on_step=lambda step, value: bar.update(1))
    save_retouch_net(out, net, {"profile": str(profile), "trained_on": f"{len(files)} photos of {folder}",
                                "epochs": epochs, "seed": seed, "edit_settings": settings.as_dict()})
    click.echo(f"retouching model written to {out}")
