"""``persaes retouch`` and ``persaes train-retoucher``: photos retouched toward a taste."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from persaes.cli.common import (
    Progress,
    device_option,
    fidelity_option,
    ops_option,
    printable,
    steps_option,
    user_errors,
    warn,
)

from persaes.app.retouch_folder import retouch_folder
from persaes.app.retouch_training import fit_pairs
from persaes.app.variants import is_variant
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.backbones import BackboneError
from persaes.core.scorer import Scorer, load_scorer
from persaes.io.images import iter_images
from persaes.io.retouch_net_file import load_retouch_net, save_retouch_net
from retouch.optimize import EditSettings, train_retouch_net

base_option = click.option("--base", default=None,
                           help="Model whose retouch a profile's edit is made on top of [default: generic] ('none': "
                                "on the original photo).")


def base_scorer(profile: str, base: str | None, device: str) -> Scorer | None:
    """The scorer whose fitted edit a profile's is made on top of; None where the profile's is the only edit."""
    base = base or "generic"
    return None if base in ("none", profile) else load_scorer(base, device=device)


@click.command("retouch")
@click.argument("in_dir", metavar="IN", type=click.Path(file_okay=False))
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--profile", default="generic", show_default=True,
              help="Personal profile (or shipped name) to retouch toward.")
@base_option
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
              help="A retouching model from train-retoucher: one pass per photo instead of optimising (not with "
                   "--base).")
@ops_option
@steps_option
@fidelity_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--redo", is_flag=True,
              help="Re-do the photos OUT holds from a run with other settings, replacing them there (IN is never "
                   "touched).")
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def retouch_cmd(in_dir: str, out_dir: str, profile: str, base: str | None, model_path: str | None,
                ops: tuple[str, ...], steps: int, fidelity: float, seed: int, redo: bool, device: str) -> None:
    """Retouch every photo under IN into OUT (same relative paths), toward a profile's taste.

    IN is never written to. Photos finished with the same settings are skipped on a rerun, so
    an interrupted run resumes; if OUT holds photos made with other settings (another profile,
    --steps, ...), the run stops before writing anything: pass --redo to re-do them, or choose
    another OUT. OUT/scores.csv lists each photo's score before and after (under the profile)
    and the settings that made it.
    A profile's edit is fitted on top of the generic retouch (--base), so the generic
    corrections stay unless the profile's taste argues against them.

    \b
    Example:
      persaes retouch ~/Pictures/album ~/Pictures/retouched --profile me.safetensors
    """
    if model_path and base is not None:
        raise click.UsageError("--base is for fitted edits; a --model retouches in one pass")
    scorer = load_scorer(profile, device=device)
    net = None
    if model_path:
        net, _ = load_retouch_net(model_path)
        net = net.to(scorer.device)
    base_model = None if model_path else base_scorer(profile, base, device)
    with Progress("retouching") as progress:
        summary = retouch_folder(in_dir, out_dir, scorer, ops, EditSettings(steps=steps, fidelity=fidelity), net, seed,
                                 progress=progress, on_error=warn,
                                 model_name=Path(model_path).name if model_path else str(profile), base=base_model,
                                 base_name=base or "generic", redo=redo)
    click.echo(printable(f"{summary.done} photos retouched into {out_dir}, {summary.skipped} already done, "
                         f"{len(summary.failed)} failed"))
    if summary.failed:
        sys.exit(1)


@click.command("train-retoucher")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Retouching model to write (.safetensors).")
@click.option("--profile", default="generic", show_default=True, help="Profile whose taste the model learns.")
@base_option
@ops_option
@steps_option
@fidelity_option
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(1),
              help="Passes over the photos' fitted edits (cheap: no scorer pass).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--size", default=256, show_default=True, type=click.IntRange(32), help="Training copy side.")
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@user_errors(ValueError, OSError, BackboneError, RuntimeError)
def train_retoucher_cmd(folder: str, out: str, profile: str, base: str | None, ops: tuple[str, ...], steps: int,
                        fidelity: float, epochs: int, batch_size: int, size: int, seed: int, device: str) -> None:
    """Train a small feed-forward retouching network over FOLDER to retouch as a profile does.

    Each photo's edit is first fitted as `persaes retouch` fits it (a profile's edit on top of
    the generic retouch, --base); the network then learns, on --size-pixel copies of the photos
    and their edits, to make those edits in one pass, so `persaes retouch --model` retouches new
    photos without fitting.

    \b
    Example:
      persaes train-retoucher ~/Pictures/album --out me-retoucher.safetensors --profile me.safetensors
      persaes retouch ~/Pictures/new ~/Pictures/new-retouched --model me-retoucher.safetensors
    """
    root = Path(folder)
    files = [path for path in iter_images([root]) if not is_variant(path.relative_to(root).as_posix())]
    if not files:
        raise click.ClickException(f"{folder}: no photos found")
    loss = AestheticLoss(profile, device=device)
    base_model = base_scorer(profile, base, device)
    base_loss = AestheticLoss(base_model) if base_model is not None else None
    settings = EditSettings(steps=steps, fidelity=fidelity)
    with Progress("fitting edits") as progress:
        pairs = fit_pairs(files, loss, ops, settings, size, seed=seed, base=base_loss, progress=progress, on_error=warn)
    if not len(pairs):
        raise click.ClickException(f"{folder}: no readable photos")
    steps_total = epochs * -(-len(pairs) // batch_size)
    with Progress("training", "steps") as progress:
        progress(0, steps_total)
        net = train_retouch_net(pairs.batches(batch_size, seed), ops, epochs, seed=seed, device=loss.scorer.device,
                                on_step=lambda step, _: progress(step, steps_total))
    save_retouch_net(out, net, {"profile": str(profile), "base": (base or "generic") if base_loss else "none",
                                "trained_on": f"{len(pairs)} photos of {folder}", "size": size, "epochs": epochs,
                                "seed": seed, "edit_settings": settings.as_dict()})
    click.echo(f"retouching model written to {out}")
