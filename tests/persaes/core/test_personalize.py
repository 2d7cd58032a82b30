from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from persaes.app.retouch_folder import save_photo
from persaes.core.personalize import PersonalizeError, personalize
from persaes.core.scorer import load_scorer, resolve_weights
from persaes.core.train import PERSONAL_PRESETS
from persaes.io.checkpoint import load_model
from persaes.io.images import load_image
from persaes.io.preferences import Answer, append_answer
from persaes.io.references import read_score_csv
from retouch import expose

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "album"


def _variants_album(root: Path, names: list[str]) -> None:
    """Each photo as itself, 0.8 EV brighter and 0.8 EV darker."""
    for name in names:
        image = load_image(EXAMPLES / name)[None]
        save_photo(image[0], root / name)
        save_photo(expose(image, 0.8)[0], root / f"bright_{name}")
        save_photo(expose(image, -0.8)[0], root / f"dark_{name}")


@pytest.fixture(scope="module")
def dark_lover(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A profile from answers that always prefer the darker version of a photo."""
    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    train, held = names[:10], names[10:16]
    root = tmp_path_factory.mktemp("album")
    _variants_album(root, train)
    prefs = root.parent / "dark.jsonl"
    for n in train:
        for winner, loser in ((f"dark_{n}", n), (n, f"bright_{n}"), (f"dark_{n}", f"bright_{n}")):
            append_answer(prefs, Answer(winner=winner, loser=loser))
    held_root = tmp_path_factory.mktemp("held")
    _variants_album(held_root, held)
    profile = root.parent / "dark.safetensors"
    personalize(root, prefs, profile, device="cpu", seed=0)
    return {"album": root, "prefs": prefs, "profile": profile, "held": held_root}


def _share_preferring_dark(scorer_name: Path | str, held: Path) -> float:
    scorer = load_scorer(scorer_name, device="cpu")
    names = sorted(p.name for p in held.glob("*.jpg") if not p.name.startswith(("dark_", "bright_")))
    dark = scorer.score([held / f"dark_{n}" for n in names])
    bright = scorer.score([held / f"bright_{n}" for n in names])
    return float((dark > bright).float().mean())


def test_profile_follows_the_answers_on_held_out_photos(dark_lover: dict[str, Path]) -> None:
    generic = _share_preferring_dark("generic", dark_lover["held"])
    personal = _share_preferring_dark(dark_lover["profile"], dark_lover["held"])
    # right on most held-out pairs, and at least half the generic model's remaining errors corrected
    assert personal >= 0.8 and personal - generic >= (1 - generic) / 2


def test_profile_metadata(dark_lover: dict[str, Path]) -> None:
    meta = load_scorer(dark_lover["profile"], device="cpu").metadata
    trained = meta["trained_on"]
    assert meta["kind"] == "profile" and meta["seed"] == 0
    assert trained["answers"] == 30 and trained["inferred_pairs"] == 0 and trained["photos"] == 30
    assert len(trained["album_sha256"]) == 64 and meta["training"]["personal"]["loss"] == "hinge"
    # the default personal stage: the taste part alone, its strengths chosen by the answers
    assert meta["training"]["personal"] == PERSONAL_PRESETS["taste"].as_dict()
    assert meta["training"]["personal_iterations_trained"] == 0
    strength = meta["training"]["taste_strength"]
    assert set(strength) == {"generic_weight", "style_l2", "content_l2"}
    assert strength["style_l2"] is not None and 0 <= strength["generic_weight"] <= 1  # consistent answers
    assert load_scorer(dark_lover["profile"], device="cpu").model.head.taste is not None


def test_same_inputs_and_seed_give_a_bit_identical_profile(dark_lover: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.safetensors"
    personalize(dark_lover["album"], dark_lover["prefs"], again, device="cpu", seed=0)
    first, second = load_file(str(dark_lover["profile"])), load_file(str(again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_answers_naming_missing_photos_are_reported(dark_lover: dict[str, Path], tmp_path: Path) -> None:
    prefs = tmp_path / "p.jsonl"
    shutil.copy(dark_lover["prefs"], prefs)
    append_answer(prefs, Answer(winner="gone.jpg", loser=sorted(p.name for p in dark_lover["album"].glob("*.jpg"))[0]))
    report = personalize(dark_lover["album"], prefs, tmp_path / "p.safetensors", device="cpu")
    assert report.answered == 30 and any("gone.jpg" in p for p in report.problems)


def test_too_small_album_and_useless_answers(photos: list[Path], tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(photos[0], one / photos[0].name)
    prefs = tmp_path / "p.jsonl"
    append_answer(prefs, Answer(winner="a.jpg", loser="b.jpg"))
    with pytest.raises(PersonalizeError, match="at least two photos"):
        personalize(one, prefs, tmp_path / "x.safetensors", device="cpu")
    shutil.copy(photos[1], one / photos[1].name)
    with pytest.raises(PersonalizeError, match="no usable answer"):
        personalize(one, prefs, tmp_path / "x.safetensors", device="cpu")
    assert not (tmp_path / "x.safetensors").exists()


def _chain_album(photos: list[Path], root: Path) -> tuple[Path, Path]:
    """The fixture photos as an album, and answers ranking them in name order (a > b > c > d)."""
    album = root / "album"
    album.mkdir()
    for p in photos:
        shutil.copy(p, album / p.name)
    prefs = root / "p.jsonl"
    names = sorted(p.name for p in photos)
    for a, b in zip(names, names[1:]):
        append_answer(prefs, Answer(winner=a, loser=b))
    return album, prefs


def test_generic_stage_from_references(photos: list[Path], tmp_path: Path) -> None:
    album, prefs = _chain_album(photos, tmp_path)
    refs_dir = tmp_path / "refs"
    refs_dir.mkdir()
    rows = ["file,score"]
    for i, p in enumerate(sorted(EXAMPLES.glob("*.jpg"))[:12]):
        shutil.copy(p, refs_dir / p.name)
        rows.append(f"{p.name},{2 + (i % 8)}")
    (refs_dir / "scores.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "p.safetensors"
    refs = read_score_csv(refs_dir / "scores.csv")
    report = personalize(album, prefs, out, references=refs, k=1, device="cpu")
    assert report.references == 12 and report.inferred == 2  # K grown until every reference is used
    meta = load_scorer(out, device="cpu").metadata
    assert meta["trained_on"]["start"] == "references" and meta["training"]["k"] == 1
    assert json.loads(json.dumps(meta))  # plain JSON all the way
    paper = personalize(album, prefs, tmp_path / "paper.safetensors", references=refs, k=1, min_references=0,
                        device="cpu")
    assert 1 <= paper.references <= len(photos) < 12  # the paper's hard K: one neighbour per album photo
    assert load_scorer(tmp_path / "paper.safetensors", device="cpu").metadata["training"]["min_references"] == 0


def test_full_finetune_saves_and_restores_the_backbone(photos: list[Path], tmp_path: Path) -> None:
    from persaes.core.train import PersonalSettings

    album, prefs = _chain_album(photos, tmp_path)
    out = tmp_path / "full.safetensors"
    personalize(album, prefs, out, device="cpu", finetune_backbone=True,
                personal=PersonalSettings(iterations=2, batch_size=3, lr=1e-3, epochs=None))
    tensors = load_file(str(out))
    assert any(k.startswith("backbone.") for k in tensors)
    model, _ = load_model(out)  # as saved (a scorer folds the batch norms into the convolutions)
    pretrained, _ = load_model(resolve_weights("generic"))
    stem = "backbone.stem.0.weight"
    assert torch.equal(model.backbone.state_dict()[stem[len("backbone."):]], tensors[stem])
    assert not torch.equal(tensors[stem], pretrained.backbone.state_dict()[stem[len("backbone."):]])


def test_a_consistent_taste_on_different_photos_against_the_generic_bias_is_learned(tmp_path: Path) -> None:
    """A user who prefers vivid colour (the generic model prefers ×0.55 to ×1.45 saturation on these
    photos) answers pairs of different photos, each in one version."""
    from persaes.eval.simulate import CONSISTENT_TASTES, edit_along

    vivid = CONSISTENT_TASTES["vivid"]
    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    album, held = tmp_path / "album", tmp_path / "held"
    values = {}
    for name in names[:16]:  # each photo as two album files, muted and vivid: 32 photos
        image = load_image(EXAMPLES / name, max_side=256)[None]
        for amount, tag in ((-1.0, "m"), (1.0, "v")):
            save_photo(edit_along(image, "saturation", amount)[0], album / f"{tag}_{name}")
            values[f"{tag}_{name}"] = vivid.value(load_image(album / f"{tag}_{name}")[None])
    prefs = tmp_path / "vivid.jsonl"
    keys = sorted(values)
    for i, a in enumerate(keys):  # every pair of files that show different photos
        for b in keys[i + 1:]:
            if a[2:] != b[2:]:
                append_answer(prefs, Answer(winner=a, loser=b) if values[a] > values[b] else Answer(winner=b, loser=a))
    profile = tmp_path / "vivid.safetensors"
    personalize(album, prefs, profile, device="cpu")
    for name in names[16:]:
        image = load_image(EXAMPLES / name, max_side=256)[None]
        save_photo(edit_along(image, "saturation", -1.0)[0], held / f"muted_{name}")
        save_photo(edit_along(image, "saturation", 1.0)[0], held / f"vivid_{name}")

    def share_vivid(scorer_name: Path | str) -> float:
        scorer = load_scorer(scorer_name, device="cpu")
        low = scorer.score([held / f"muted_{n}" for n in names[16:]])
        high = scorer.score([held / f"vivid_{n}" for n in names[16:]])
        return float((high > low).float().mean())

    assert share_vivid("generic") <= 0.5 and share_vivid(profile) >= 0.85
