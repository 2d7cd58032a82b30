"""Generic weights from any rated reference set: the shipped weights' objective as a library call.

:func:`train_generic_weights` trains the default backbone's head (heads only, on cached features) on

* EMD against the references' 10-bin histograms, and, when prior photos are given,
* the quality prior: a ranking hinge loss preferring each prior photo to its seeded degraded and
  over-processed versions (:data:`VERSIONS`),

then runs the recipe's hardening rounds (:class:`persaes.core.train.GenericRecipe`), and writes a
normal weights file (``load_scorer``, ``persaes score --profile``, ``persaes personalize --start``
take it). ``weights/recipes/make_generic.py`` is its OASIS-specific call that makes the shipped
``weights/generic.safetensors``; ``persaes train-generic`` its command.

Every feature and every fitted edit is cached as it is computed, and with ``state`` the training
state is written after every epoch (one file per hardening round beside it): the same call run
again after an interruption continues from there and writes the same weights.

Under ``torchrun`` (``torchrun --nproc-per-node N --no-python persaes train-generic …``) every rank makes
the same call: each rank extracts the features of its shard (:func:`persaes.core.distributed.shard`) of
the references, of the prior photos and of their versions into the feature cache, and fits its shard of
each hardening round's edits; after a barrier every rank reads them all from the cache (a crashed run,
started again, computes only what is missing), the head trains in ``DistributedDataParallel`` on the
same global batches as in one process, and rank 0 alone writes the weights (their metadata's
``world_size`` says how many processes trained them) and the training state.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from persaes.core import distributed
from persaes.core.aesthetic_loss import AestheticLoss
from persaes.core.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.core.device import resolve_device
from persaes.core.features import FeatureCache, Features, extract_features, features_of_tensors, file_digest
from persaes.core.model import BINS, AestheticModel, AttentionHead, distribution_to_score
from persaes.core.retouching import retouch_image
from persaes.core.scorer import Scorer
from persaes.core.train import GENERIC_RECIPES, SHIPPED_RECIPE, GenericRecipe, train_generic
from persaes.io.checkpoint import model_metadata, save_checkpoint
from persaes.io.images import load_image
from persaes.io.references import ReferenceSet
from retouch import DEGRADATIONS, LEVELS, OPS, OVER_PROCESSING, degrade, over_process
from retouch.optimize import EditSettings

__all__ = ["VERSIONS", "edit_features", "make_version", "train_generic_weights", "version_features"]

#: Every version a training photo is ranked above: ``(kind, level)``, level None for degradations.
VERSIONS: tuple[tuple[str, str | None], ...] = (
    *((kind, None) for kind in DEGRADATIONS),
    *((kind, level) for kind in OVER_PROCESSING for level in LEVELS),
)

StageCallback = Callable[[str, int, int], None]
"""Told ``(stage, done, total)``: reference features, prior features, version features, generic stage,
and per hardening round its fitted edits and its training (as :data:`persaes.core.personalize.StageCallback`)."""


def make_version(image: Tensor, kind: str, level: str | None, generator: torch.Generator) -> Tensor:
    """One seeded degraded (``level`` None) or over-processed version of ``image``."""
    return degrade(image, kind, generator)[0] if level is None else over_process(image, kind, level, generator)[0]


def _report(progress: StageCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def version_features(model: AestheticModel, files: list[Path], seed: int, draws: int, cache: FeatureCache,
                     progress: StageCallback | None = None) -> tuple[Features, list[int], list[str]]:
    """Features of ``draws`` seeded versions of every file under each of :data:`VERSIONS`.

    Returns:
        ``(features, each row's source file index, each row's version name)``; every version is
        cached under its file's digest, kind, level, seed and draw.
    """
    parts, owners, names = [], [], []
    _report(progress, "version features", 0, len(files))
    for n, path in enumerate(files):
        found, versions = _file_versions(model, path, n, seed, draws, cache)
        parts.extend(found)
        owners.extend([n] * len(versions))
        names.extend(kind if level is None else f"{kind}/{level}" for _, _, kind, level in versions)
        _report(progress, "version features", n + 1, len(files))
    return Features.cat(parts), owners, names


def _file_versions(model: AestheticModel, path: Path, n: int, seed: int, draws: int, cache: FeatureCache
                   ) -> tuple[list[Features], list[tuple[int, int, str, str | None]]]:
    """The features of the versions of ``path``, file ``n`` of the list (its versions' seeds depend on ``n``).

    Returns:
        Each version's features (from the cache, or computed and cached) and ``(draw, kind index, kind,
        level)``.
    """
    base = file_digest(path)
    versions = [(draw, k, kind, level) for draw in range(draws) for k, (kind, level) in enumerate(VERSIONS)]
    keys = [hashlib.sha256(f"{base}/{kind}/{level or ''}/{seed}/{draw}".encode()).hexdigest()
            for draw, _, kind, level in versions]
    found = [cache.get(key) for key in keys]
    missing = [i for i, feats in enumerate(found) if feats is None]
    if missing:
        image = load_image(path, max_side=2 * model.spec.input_size)[None]
        batch = []
        for i in missing:
            draw, k, kind, level = versions[i]
            generator = torch.Generator().manual_seed(seed * 100003 + n * 7 + k + 1009 * draw)
            batch.append(make_version(image, kind, level, generator)[0])
        computed = features_of_tensors(model, torch.stack(batch))
        for row, i in enumerate(missing):
            found[i] = computed.rows([row])
            cache.put(keys[i], found[i])
    return found, versions  # type: ignore[return-value]


def _shared_out(items: Sequence[Any], compute: Callable[[list[Any], str], object],
                progress: StageCallback | None, stage: str) -> None:
    """Under torchrun: ``compute`` this rank's shard of ``items`` (into the cache), then wait for every rank.

    ``compute`` is given the shard and its stage's name (``stage, shard R of N``), told to ``progress``.
    Nothing in one process: the caller's own pass over all items computes them there.
    """
    me = distributed.world()
    if me.size > 1:
        part = distributed.shard(items, me)
        stage = f"{stage}, shard {me.rank + 1} of {me.size}"
        _report(progress, stage, 0, len(part))
        if part:  # more ranks than items: nothing to do here
            compute(part, stage)
        distributed.barrier()


def _versions_of(model: AestheticModel, files: list[Path], indices: list[int], seed: int, draws: int,
                 cache: FeatureCache, progress: StageCallback | None, stage: str) -> None:
    """Compute and cache the versions' features of the files ``indices`` (a shard of :func:`version_features`)."""
    for done, n in enumerate(indices, start=1):
        _file_versions(model, files[n], n, seed, draws, cache)
        _report(progress, stage, done, len(indices))


def edit_features(model: AestheticModel, files: list[Path], seed: int, cache: FeatureCache,
                  progress: StageCallback | None = None, stage: str = "fitted edits",
                  settings: EditSettings | None = None) -> Features:
    """Features of the generic retouch of each file (all ops) fitted against ``model``.

    The fit uses ``settings`` (default :class:`EditSettings`) against the model as it is now; cached under the
    file's and the head's digests and the settings.
    """
    settings = settings or EditSettings()
    head_digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                          for v in model.head.state_dict().values())).hexdigest()
    fitted_with = hashlib.sha256(repr(sorted(settings.as_dict().items())).encode()).hexdigest()[:16]
    loss = AestheticLoss(Scorer(copy.deepcopy(model), {}))
    device = next(model.parameters()).device
    parts = []
    _report(progress, stage, 0, len(files))
    for n, path in enumerate(files):
        key = hashlib.sha256(f"{file_digest(path)}/edit/{head_digest}/{seed}/{fitted_with}".encode()).hexdigest()
        found = cache.get(key)
        if found is None:
            edit = retouch_image(load_image(path)[None].to(device), loss, OPS, settings, seed=seed)
            found = features_of_tensors(model, edit)
            cache.put(key, found)
        parts.append(found)
        _report(progress, stage, n + 1, len(files))
    return Features.cat(parts)


def _recipe_name(recipe: GenericRecipe) -> str:
    """The name of ``recipe`` in :data:`GENERIC_RECIPES`, or ``custom``."""
    return next((name for name, known in GENERIC_RECIPES.items() if known == recipe), "custom")


def _prior_rows(references: ReferenceSet, ok: list[int], prior_photos: Sequence[str | os.PathLike[str]]
                ) -> tuple[list[int | None], list[Path]]:
    """For each prior photo (repeats dropped): its row among the readable references, or None.

    None where it is no reference; references that could not be read are dropped (reported already).
    Returns the rows and the photos.
    """
    row_of = {Path(references.paths[i]).resolve(): r for r, i in enumerate(ok)}
    unreadable = {Path(p).resolve() for p in references.paths} - set(row_of)
    rows: list[int | None] = []
    files: list[Path] = []
    seen: set[Path] = set()
    for raw in prior_photos:
        path = Path(raw)
        key = path.resolve()
        if key in seen or key in unreadable:  # an unreadable reference was reported already
            continue
        seen.add(key)
        rows.append(row_of.get(key))
        files.append(path)
    return rows, files


def _prior_features(model: AestheticModel, references: ReferenceSet, ok: list[int], ref_feats: Features,
                    prior_photos: Sequence[str | os.PathLike[str]], cache: FeatureCache,
                    progress: StageCallback | None) -> tuple[Features, list[int], list[Path], list[str]]:
    """The references' features with those of the prior photos that are no reference after them.

    Returns:
        ``(features, each readable prior photo's row in them, those photos, problems)``.
    """
    rows, files = _prior_rows(references, ok, prior_photos)
    extra = [f for f, r in zip(files, rows) if r is None]
    parts, problems = [ref_feats], []
    if extra:
        _shared_out(extra, lambda part, stage: extract_features(
            model, part, cache, on_progress=_counter(progress, stage, len(part))), progress, "prior features")
        _report(progress, "prior features", 0, len(extra))
        extra_feats, extra_ok, problems = extract_features(model, extra, cache,
                                                           on_progress=_counter(progress, "prior features", len(extra)))
        if extra_ok:
            parts.append(extra_feats)
        extra_row = {extra[i]: len(ref_feats) + j for j, i in enumerate(extra_ok)}
        rows = [r if r is not None else extra_row.get(f) for f, r in zip(files, rows)]
    kept = [(r, f) for r, f in zip(rows, files) if r is not None]
    return Features.cat(parts), [r for r, _ in kept], [f for _, f in kept], problems


def _preference(head: torch.nn.Module, feats: Features, pairs: Tensor, names: list[str],
                device: torch.device) -> dict[str, float]:
    """The share of each version kind's pairs whose original the head scores higher."""
    if not names:
        return {}
    with torch.no_grad():
        scores = torch.cat([distribution_to_score(head(*feats.take(chunk, device))).cpu()
                            for chunk in torch.arange(len(feats)).split(1024)])
    won = (scores[pairs[:, 0]] > scores[pairs[:, 1]]).float()
    return {name: round(float(won[[i for i, n in enumerate(names) if n == name]].mean()), 4)
            for name in dict.fromkeys(names)}


def train_generic_weights(
    references: ReferenceSet,
    out: str | os.PathLike[str],
    recipe: GenericRecipe | str = SHIPPED_RECIPE,
    prior_photos: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    cache: FeatureCache | str | os.PathLike[str] | None = None,
    state: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
    progress: StageCallback | None = None,
    log: Callable[[str], None] | None = None,
    description: str = "rated references",
    prior_description: str = "photos",
    recipe_name: str | None = None,
    trained_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train generic weights on rated references (and a quality prior) and write them to ``out``.

    The same inputs, recipe and seed give the same weights (on the same device and thread count).
    Under torchrun every rank makes this call; the features and the hardening rounds' fitted edits are
    shared out among the ranks, the training is data-parallel and rank 0 writes ``out`` (see the module's
    docstring).

    Args:
        references: the rated references (e.g. :func:`persaes.io.references.load_references`).
        out: the ``.safetensors`` file to write (atomically; an existing one is replaced).
        recipe: a :class:`GenericRecipe` or the name of one in :data:`GENERIC_RECIPES`.
        prior_photos: the quality prior's photos, each ranked above its seeded degraded and
            over-processed versions (a reference among them is the same photo, not a new one); the
            hardening rounds fit edits of these photos.
        seed: fixes the head's start, the versions, the shuffles and the hardening photos.
        cache: the feature cache, or its folder (default: :meth:`FeatureCache.default`).
        state: the training state file, written after every epoch (hardening rounds: one file per
            round beside it); an existing one of the same run is resumed.
        device: ``auto``, ``cpu`` or ``cuda``.
        on_epoch: called with (epochs done in the stage, mean loss) after each epoch of each stage.
        progress: told each stage's progress (:data:`StageCallback`).
        log: told one line per hardening round and the training-set preference per kind.
        description: what the references are, recorded in the metadata.
        prior_description: what the prior photos are (``photos``), recorded in the metadata.
        recipe_name: the recipe's name in the metadata (default: its :data:`GENERIC_RECIPES` name, or
            ``custom``).
        trained_on: further entries of the metadata's ``trained_on``.

    Returns:
        ``out`` (a Path), ``references`` and ``prior_photos`` (how many were trained on),
        ``train_preference`` (per version kind, the share of pairs the original wins),
        ``hardening`` (per round: photos, mean score gain, pairs added), ``history`` (the loss of every
        epoch), ``problems`` (one line per photo that could not be read) and ``metadata``.

    Raises:
        ValueError: no reference could be used, or hardening rounds without prior photos.
    """
    if isinstance(recipe, str):
        if recipe not in GENERIC_RECIPES:
            raise ValueError(f"unknown generic recipe {recipe!r}; choose from {', '.join(sorted(GENERIC_RECIPES))}")
        recipe_name, recipe = recipe_name or recipe, GENERIC_RECIPES[recipe]
    recipe_name = recipe_name or _recipe_name(recipe)
    if recipe.harden_rounds and not prior_photos:
        raise ValueError(f"the {recipe_name} recipe's hardening rounds fit edits of prior photos; none were given "
                         "(give some, or set its hardening rounds to 0)")
    device = distributed.rank_device(resolve_device(device))
    me = distributed.init(device)
    state_path = None if state is None else Path(state)
    torch.manual_seed(seed)

    spec = get_spec(DEFAULT_BACKBONE)
    model = AestheticModel(spec, create_backbone(spec.name, "pretrained"),
                           AttentionHead(spec.channels, quality_width=recipe.quality_width)).eval().to(device)
    if not isinstance(cache, FeatureCache):
        cache = (FeatureCache(cache, spec.name, "pretrained") if cache is not None
                 else FeatureCache.default(spec.name, "pretrained"))
    problems = list(references.problems)
    _shared_out(references.paths, lambda part, stage: extract_features(
        model, part, cache, on_progress=_counter(progress, stage, len(part))), progress, "reference features")
    _report(progress, "reference features", 0, len(references))
    ref_feats, ok, bad = extract_features(model, references.paths, cache,
                                          on_progress=_counter(progress, "reference features", len(references)))
    problems += bad
    if not ok:
        raise ValueError(f"{description}: none of the {len(references)} reference photos could be used")
    hists = references.hists[ok]

    feats, prior_rows, prior_files, bad = _prior_features(model, references, ok, ref_feats, prior_photos, cache,
                                                         progress)
    problems += bad
    if recipe.harden_rounds and not prior_rows:
        raise ValueError(f"the {recipe_name} recipe's hardening rounds fit edits of prior photos; none could be read")
    names: list[str] = []
    pairs = None
    if prior_rows:
        _shared_out(range(len(prior_files)), lambda part, stage: _versions_of(
            model, prior_files, part, seed, recipe.draws, cache, progress, stage), progress, "version features")
        ver_feats, owners, names = version_features(model, prior_files, seed, recipe.draws, cache, progress)
        pairs = torch.tensor([[prior_rows[o], len(feats) + j] for j, o in enumerate(owners)])
        feats = Features.cat([feats, ver_feats])

    head = model.head
    settings = recipe.training

    def source(index: Tensor) -> tuple[Tensor, ...]:
        return feats.take(index, device)

    def epoch_done(stage: str, epochs: int) -> Callable[[int, float], None]:
        def done(epoch: int, loss: float) -> None:
            _report(progress, stage, epoch, epochs)
            if on_epoch is not None:
                on_epoch(epoch, loss)
        return done

    rated = torch.arange(len(ref_feats))
    _report(progress, "generic stage", 0, settings.epochs)
    history = train_generic(head, source, torch.cat([hists, torch.zeros(len(feats) - len(hists), BINS)]), settings,
                            seed, pairs=pairs, rated=rated, state_path=state_path,
                            on_epoch=epoch_done("generic stage", settings.epochs))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(prior_rows), generator=generator).tolist()
    harden = [(prior_rows[i], prior_files[i]) for i in order]
    rounds = []
    for r in range(recipe.harden_rounds):
        chosen = harden[r * recipe.harden_photos:(r + 1) * recipe.harden_photos]
        if not chosen:
            _say(log, f"hardening round {r + 1}: no prior photo left to fit; stopped after {r} round(s)")
            break
        chosen_rows = [row for row, _ in chosen]
        distributed.broadcast_module(head)  # the edits' cache keys hold the head's digest: the same on every rank
        _shared_out([path for _, path in chosen], lambda part, stage: edit_features(
            model, part, seed, cache, progress, stage, recipe.harden_edit), progress, f"hardening round {r + 1} edits")
        edits = edit_features(model, [path for _, path in chosen], seed, cache, progress,
                              f"hardening round {r + 1} edits", recipe.harden_edit)
        with torch.no_grad():
            gains = (distribution_to_score(head(*edits.take(range(len(edits)), device)))
                     - distribution_to_score(head(*feats.take(chosen_rows, device)))).cpu()
        won = [(row, len(feats) + j) for j, row in enumerate(chosen_rows) if gains[j] > recipe.harden_gain]
        rounds.append({"photos": len(chosen), "mean_gain": round(float(gains.mean()), 4), "pairs": len(won)})
        _say(log, f"hardening round {r + 1}: mean score gain of the fitted edits {gains.mean():+.3f}, "
                  f"{len(won)} new pairs")
        feats = Features.cat([feats, edits])
        pairs = torch.cat([pairs, torch.tensor(won * recipe.harden_repeat, dtype=torch.long).reshape(-1, 2)])
        round_state = None if state_path is None else state_path.with_suffix(f".round{r + 1}.safetensors")
        stage = f"hardening round {r + 1}"
        _report(progress, stage, 0, recipe.harden_epochs)
        history += train_generic(head, source, torch.cat([hists, torch.zeros(len(feats) - len(hists), BINS)]),
                                 replace(settings, epochs=recipe.harden_epochs), seed + r + 1, pairs=pairs,
                                 rated=rated, state_path=round_state,
                                 on_epoch=epoch_done(stage, recipe.harden_epochs), standardize=False)
    per_kind = _preference(head, feats, pairs[: len(names)] if pairs is not None else torch.zeros(0, 2), names,
                           device)
    if per_kind:
        _say(log, f"training-set preference for originals: {per_kind}; final loss {history[-1]:.4f}")
    n_prior = len(prior_rows)
    meta = model_metadata(
        model, "pretrained", kind="generic", trained=True,
        trained_on={"references": f"{description}, {len(ok)} photos",
                    "quality_prior": f"{n_prior} {prior_description} x {len(VERSIONS)} kinds x {recipe.draws} draws"
                    if n_prior else None,
                    **(trained_on or {})},
        training=settings.as_dict(), recipe=recipe_name,
        recipe_settings={k: v for k, v in asdict(recipe).items() if k != "training"},
        prior_photos=n_prior, seed=seed, train_preference=per_kind, hardening=rounds, world_size=me.size,
    )
    path = _write(out, model, meta)
    return {"out": path, "references": len(ok), "prior_photos": n_prior, "train_preference": per_kind,
            "hardening": rounds, "history": history, "problems": problems, "metadata": meta}


def _write(out: str | os.PathLike[str], model: AestheticModel, meta: dict[str, Any]) -> Path:
    """Write the weights file (rank 0 alone, atomically); every rank returns once it is there."""
    if distributed.world().is_main:
        save_checkpoint(out, model.to("cpu"), meta)
    distributed.barrier()
    return Path(out)


def _counter(progress: StageCallback | None, stage: str, total: int) -> Callable[[int], None] | None:
    """An ``on_progress`` for :func:`extract_features` that tells ``progress`` the running count."""
    if progress is None:
        return None
    done = [0]

    def step(count: int) -> None:
        done[0] = min(total, done[0] + count)
        progress(stage, done[0], total)

    return step


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)
