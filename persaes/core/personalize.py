"""The method end to end: album + answers (+ rated references) → a saved personal profile.

The stages are separate functions so the benchmark runs exactly the code that
``persaes personalize`` runs:

* :func:`generic_stage` — K nearest references of the album photos (cosine on pooled
  backbone features), K grown until their union holds at least :data:`MIN_REFERENCES`,
  then the head trained on that union with EMD.
* :func:`personal_stage` — the head fine-tuned on answered + inferred pairs.
* :func:`personalize` — reads the album and answers, runs both, writes the profile.

Example:
    >>> import tempfile
    >>> from persaes.core.scorer import load_scorer
    >>> from persaes.io.images import to_pil
    >>> from persaes.io.preferences import Answer, append_answer
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "album").mkdir()
    >>> g = torch.Generator().manual_seed(0)
    >>> for name, level in [("dark", 0.3), ("mid", 0.6), ("bright", 1.0)]:
    ...     to_pil(level * torch.rand(3, 48, 64, generator=g)).save(tmp / "album" / f"{name}.jpg")
    >>> answers = tmp / "answers.jsonl"                       # someone who likes dark photos
    >>> append_answer(answers, Answer("dark.jpg", "mid.jpg"))
    >>> append_answer(answers, Answer("mid.jpg", "bright.jpg"))
    >>> answers.read_text().splitlines()[0]
    '{"winner": "dark.jpg", "loser": "mid.jpg"}'
    >>> fixed = PersonalSettings(style_l2=1.0, content_l2=1.0)   # fixed strengths: no choice to make
    >>> cache = FeatureCache(tmp / "cache", DEFAULT_BACKBONE, "pretrained")   # default: FeatureCache.default
    >>> report = personalize(tmp / "album", answers, tmp / "me.safetensors", device="cpu", personal=fixed,
    ...                      cache=cache)
    >>> report.answered, report.inferred, report.photos, report.problems
    (2, 1, 3, [])
    >>> scores = load_scorer(report.profile, device="cpu").score([tmp / "album" / "dark.jpg",
    ...                                                           tmp / "album" / "bright.jpg"])
    >>> bool(scores[0] > scores[1])                          # the profile prefers the dark photo
    True
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from persaes.core.backbones import DEFAULT_BACKBONE, create_backbone, get_spec
from persaes.core.device import resolve_device
from persaes.core.features import FeatureCache, Features, extract_features, file_digest
from persaes.core.knn import KnnIndex
from persaes.core.model import AestheticModel, AttentionHead, load_square
from persaes.core.scorer import resolve_weights
from persaes.core.taste import TasteChoice, expanded_pairs
from persaes.core.train import (
    GenericSettings,
    PersonalSettings,
    Source,
    live_source,
    train_generic,
    train_personal,
    train_taste,
)
from persaes.io.checkpoint import load_model, model_metadata, save_checkpoint
from persaes.io.images import ImageError, iter_images, open_rgb
from persaes.io.preferences import expand_transitive, pairs_to_indices, read_answers, resolve_answers
from persaes.io.references import ReferenceSet, load_references

log = logging.getLogger("persaes")
#: The fewest references the generic stage trains on: K is doubled from the paper's 50 until the
#: union of the album's neighbours holds this many (or all references). Ten photos' 50 nearest
#: neighbours are a few hundred references, and a regressor trained on them ranks new photos
#: worse than one trained on more (benchmarks/README.md §1, ``paper-knn``); 0 is the paper's hard K.
MIN_REFERENCES = 1000
StageCallback = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: the named stage has ``done`` of its ``total`` items done; each stage
is first reported with 0 done."""
CHECK_SIDE = 64
"""Album photos no answer names are checked by decoding them at this side at most (JPEGs at reduced scale)."""


class PersonalizeError(ValueError):
    """The inputs cannot make a profile (too few photos, no usable answer); one line."""


@dataclass
class Album:
    """The photos of an album folder: ``files[i]`` has the album-relative key ``keys[i]``."""

    root: Path
    files: list[Path]
    keys: list[str]

    @staticmethod
    def read(root: str | os.PathLike[str]) -> "Album":
        """The album's photos under ``root`` (recursively), or a one-line error if it is no folder."""
        root = Path(root)
        if not root.is_dir():
            raise PersonalizeError(f"{root}: album folder not found")
        files = list(iter_images([root]))
        return Album(root, files, [f.relative_to(root).as_posix() for f in files])

    def digest(self) -> str:
        """SHA-256 over the photos' keys and contents."""
        h = hashlib.sha256()
        for key, path in zip(self.keys, self.files):
            h.update(key.encode("utf-8", "surrogateescape"))
            try:
                h.update(file_digest(path).encode())
            except OSError:
                h.update(b"unreadable")
        return h.hexdigest()


@dataclass
class PersonalizeReport:
    """What :func:`personalize` did; ``photos`` counts the album's readable photos, ``problems`` what was skipped."""

    profile: Path
    answered: int
    inferred: int
    contradictions: int
    photos: int
    references: int = 0
    problems: list[str] = field(default_factory=list)


def generic_stage(
    head: AttentionHead,
    ref_feats: Features,
    ref_hists: Tensor,
    album_pooled: Tensor,
    k: int = 50,
    settings: GenericSettings | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    min_references: int = MIN_REFERENCES,
) -> Tensor:
    """Train ``head`` on the union of each album photo's ``k`` nearest references (EMD).

    Args:
        head: a fresh head (trained in place).
        ref_feats: features of the N references.
        ref_hists: their N×10 score histograms.
        album_pooled: pooled features of the album photos, A×C3.
        k: neighbours per album photo (the paper's K = 50), doubled until the union holds at
            least ``min_references`` references (:meth:`persaes.core.knn.KnnIndex.union_at_least`).
        settings: the generic stage's training settings (default :class:`GenericSettings`).
        seed: fixes the initial shuffles and dropout.
        device: where the head trains.
        min_references: see :data:`MIN_REFERENCES`; 0 keeps the paper's hard K.

    Returns:
        The indices of the references trained on.
    """
    index = KnnIndex(ref_feats.pooled(), [str(i) for i in range(len(ref_feats))])
    union = index.union_at_least(album_pooled.float(), k, min_references)
    train_generic(head, lambda i: ref_feats.take(union[i], device), ref_hists[union], settings or GenericSettings(),
                  seed)
    return union


@dataclass
class PersonalFit:
    """What :func:`personal_stage` did: the head's fine-tuning losses and the taste part's strengths."""

    history: list[float]
    taste: TasteChoice | None


def personal_stage(
    head: AttentionHead,
    feats: Features | Source,
    answered: Tensor,
    settings: PersonalSettings | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    extra_params: Sequence[torch.nn.Parameter] = (),
) -> PersonalFit:
    """Personalize ``head`` in place from answered pairs (M×2 indices into ``feats``, the first preferred).

    With ``settings.iterations``, the head is first fine-tuned on the answers and their one-step
    transitive pairs (the paper's personal stage; ``extra_params``, the backbone's for a full
    fine-tune, train with it); with ``settings.taste``, the taste part is then fitted on top.
    ``feats`` is cached features or a source (:func:`persaes.core.train.live_source`).
    """
    settings = settings or PersonalSettings()
    source: Source = (lambda i: feats.take(i, device)) if isinstance(feats, Features) else feats
    history: list[float] = []
    if settings.iterations:
        history = train_personal(head, source, expanded_pairs(answered), settings, seed, extra_params=extra_params)
    choice = train_taste(head, source, answered, settings) if settings.taste else None
    return PersonalFit(history, choice)


def _report(progress: StageCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def unreadable_photos(files: Sequence[Path], progress: StageCallback | None = None) -> list[str]:
    """One problem, a line naming the file, per photo of ``files`` that cannot be decoded.

    Each photo is decoded at :data:`CHECK_SIDE` pixels at most, which finds empty, truncated and
    non-image files without a pass of the backbone; ``progress`` is told the stage ``checking album``.

    Example:
        >>> import tempfile
        >>> empty = Path(tempfile.mkdtemp()) / "empty.jpg"
        >>> empty.touch()
        >>> [line.endswith("empty.jpg: empty file") for line in unreadable_photos([empty])]
        [True]
    """
    problems: list[str] = []
    if not files:
        return problems
    _report(progress, "checking album", 0, len(files))
    for done, path in enumerate(files, 1):
        try:
            open_rgb(path, max_side=CHECK_SIDE)
        except ImageError as exc:
            problems.append(str(exc))
        _report(progress, "checking album", done, len(files))
    return problems


def _features(model: AestheticModel, files: Sequence[Path], cache: FeatureCache, stage: str,
              progress: StageCallback | None) -> tuple[Features, list[int], list[str]]:
    done = [0]
    _report(progress, stage, 0, len(files))

    def step(n: int) -> None:
        done[0] += n
        _report(progress, stage, done[0], len(files))

    return extract_features(model, files, cache, on_progress=step)


def personalize(
    album_root: str | os.PathLike[str],
    prefs_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    references: str | ReferenceSet | None = None,
    k: int = 50,
    min_references: int = MIN_REFERENCES,
    device: str | torch.device = "auto",
    seed: int = 0,
    generic: GenericSettings | None = None,
    personal: PersonalSettings | None = None,
    finetune_backbone: bool = False,
    start: str | os.PathLike[str] = "generic",
    cache: FeatureCache | None = None,
    progress: StageCallback | None = None,
) -> PersonalizeReport:
    """Make a personal profile from an album and its preference answers.

    Args:
        album_root: the album folder (searched recursively).
        prefs_file: the JSON Lines answers (see :mod:`persaes.io.preferences`).
        out: where the profile goes (written atomically; an old one survives any failure).
        references: a reference spec (see :func:`persaes.io.references.load_references`) or
            set; when given, the generic stage is trained from them first, else the
            shipped ``start`` weights are the starting point.
        k: neighbours per album photo for the generic stage.
        min_references: the fewest references the generic stage trains on (:data:`MIN_REFERENCES`).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: fixes every random choice (same inputs + seed → bit-identical profile on CPU).
        generic: the generic stage's settings when ``references`` are given (default
            :class:`~persaes.core.train.GenericSettings`).
        personal: the personal stage's settings (default: the ``taste`` preset of
            :data:`~persaes.core.train.PERSONAL_PRESETS`, its strengths chosen from the answers).
        finetune_backbone: fine-tune the backbone too (the paper's full fine-tune; GPU).
        start: starting weights when no references are given.
        cache: the feature cache (default: :meth:`FeatureCache.default` for the backbone).
        progress: told each stage's progress (:data:`StageCallback`): checking album (the photos no
            answer names), album features, reference features, generic stage, personal stage.

    Returns:
        What was done; album photos that cannot be read (empty, truncated, not an image) are left out
        of its ``photos`` and each named in its ``problems``.

    Raises:
        PersonalizeError: fewer than two readable photos, or no usable pair.
    """
    torch.manual_seed(seed)
    device = resolve_device(device)
    album = Album.read(album_root)
    if len(album.files) < 2:
        raise PersonalizeError(f"{album.root}: the album needs at least two photos, found {len(album.files)}")
    answers, problems = read_answers(prefs_file)
    pairs, resolve_problems = resolve_answers(answers, album.root, album.keys)
    problems += resolve_problems
    expansion = expand_transitive(pairs)
    problems += [f"{prefs_file}: contradictory answers {a} > {b} and {b} > {a}, both dropped"
                 for a, b in expansion.contradictions]
    if not expansion.answered:
        first = f"; {len(problems)} problem(s), the first: {problems[0]}" if problems else ""
        raise PersonalizeError(f"{prefs_file}: no usable answer about photos of {album.root}{first}")

    if references is not None:
        spec = get_spec(DEFAULT_BACKBONE)
        model = AestheticModel(spec, create_backbone(spec.name, "pretrained"), AttentionHead(spec.channels)).to(device)
        start_meta = {"start": "references", "references": str(references) if isinstance(references, str) else "given"}
    else:
        model, loaded = load_model(resolve_weights(start), device=device)
        spec = model.spec
        start_meta = {"start": str(start), "start_trained_on": loaded.get("trained_on")}
    model.eval()
    cache = cache or FeatureCache.default(spec.name, "pretrained")

    used = sorted({key for pair in expansion.answered for key in pair})
    answered_keys = set(used)
    unanswered = [path for key, path in zip(album.keys, album.files) if key not in answered_keys]
    unreadable = unreadable_photos(unanswered, progress)  # the answered ones are read for their features
    problems += unreadable
    key_files = [album.files[album.keys.index(key)] for key in used]
    feats, ok, bad = _features(model, key_files, cache, "album features", progress)
    problems += bad
    photos = len(album.files) - len(unreadable) - (len(used) - len(ok))
    keys = [used[i] for i in ok]
    usable = set(keys)
    answered = [p for p in expansion.answered if p[0] in usable and p[1] in usable]
    if not answered:
        raise PersonalizeError(f"{prefs_file}: no answer names two readable photos of {album.root}")
    inferred = expand_transitive(answered).inferred
    answered_rows = pairs_to_indices(answered, keys)

    n_refs = 0
    if references is not None:
        refs = load_references(references) if isinstance(references, str) else references
        problems += refs.problems
        ref_feats, ref_ok, ref_bad = _features(model, refs.paths, cache, "reference features", progress)
        problems += ref_bad
        _report(progress, "generic stage", 0, 1)
        trained_on = generic_stage(model.head, ref_feats, refs.hists[ref_ok], feats.pooled(), k, generic, seed,
                                   device, min_references)
        n_refs = len(trained_on)

    personal = personal or PersonalSettings()
    _report(progress, "personal stage", 0, 1)
    if finetune_backbone:
        size = spec.input_size
        images = torch.cat([load_square(album.files[album.keys.index(key)], size) for key in keys])
        fit = personal_stage(model.head, live_source(model, images), answered_rows, personal, seed, device,
                             extra_params=list(model.backbone.parameters()))
    else:
        fit = personal_stage(model.head, feats, answered_rows, personal, seed, device)
    _report(progress, "personal stage", 1, 1)
    taste = None if fit.taste is None else {name: None if math.isinf(value) else value for name, value in
                                            (("generic_weight", fit.taste.generic_weight),
                                             ("style_l2", fit.taste.style_l2), ("content_l2", fit.taste.content_l2))}

    meta = model_metadata(
        model, "pretrained", kind="profile", trained=True,
        trained_on={"album": str(album.root), "album_sha256": album.digest(), "photos": photos,
                    "answers": len(answered), "inferred_pairs": len(inferred),
                    "contradictions": len(expansion.contradictions), "references": n_refs, **start_meta},
        training={"personal": personal.as_dict(), "personal_iterations_trained": len(fit.history),
                  "taste_strength": taste,
                  "generic": (generic or GenericSettings()).as_dict() if n_refs else None,
                  "k": k, "min_references": min_references, "finetune_backbone": finetune_backbone},
        seed=seed,
    )
    profile = save_checkpoint(out, model, meta, include_backbone=finetune_backbone)
    for problem in problems:
        log.warning(problem)
    return PersonalizeReport(profile, len(answered), len(inferred), len(expansion.contradictions),
                             photos, n_refs, problems)
