from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_testing import chained_album, one_line_error, run

COMMANDS = [["score"], ["personalize"], ["retouch"], ["train-retoucher"], ["compare"], ["demo"], ["prefs", "collect"],
            ["train-generic"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.output and "persaes " in result.output


def test_missing_album(tmp_path: Path) -> None:
    prefs = tmp_path / "p.jsonl"
    prefs.write_text('{"winner": "a.jpg", "loser": "b.jpg"}\n')
    out = str(tmp_path / "o.safetensors")
    one_line_error(run("personalize", str(tmp_path / "nope"), "--prefs", str(prefs), "--out", out),
                    "nope", "not found")


def test_empty_album(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    prefs = tmp_path / "p.jsonl"
    prefs.write_text('{"winner": "a.jpg", "loser": "b.jpg"}\n')
    out = str(tmp_path / "o.safetensors")
    one_line_error(run("personalize", str(tmp_path / "empty"), "--prefs", str(prefs), "--out", out),
                    "at least two photos")


def test_unreadable_preference_file(photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for p in photos:
        shutil.copy(p, album / p.name)
    out = str(tmp_path / "o.safetensors")
    one_line_error(run("personalize", str(album), "--prefs", str(tmp_path / "missing.jsonl"), "--out", out),
                    "missing.jsonl")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\xff{{{ not json\n")
    result = run("personalize", str(album), "--prefs", str(garbage), "--out", str(tmp_path / "o.safetensors"))
    assert result.exit_code != 0 and "no usable answer" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o.safetensors").exists()


def test_personalize_trains_exactly_the_iterations_asked_for(photos: list[Path], tmp_path: Path) -> None:
    from persaes.core.scorer import load_scorer

    album, prefs = chained_album(photos, tmp_path)
    counts = {}
    runs = (("default", []), ("asked", ["--iterations", "30"]), ("paper", ["--personal", "paper"]),
            ("paper, asked", ["--personal", "paper", "--iterations", "1"]))
    for label, extra in runs:
        out = tmp_path / f"{label}.safetensors"
        result = run("personalize", str(album), "--prefs", str(prefs), "--out", str(out), "--device", "cpu", *extra)
        assert result.exit_code == 0, result.output
        counts[label] = load_scorer(out, device="cpu").metadata["training"]["personal_iterations_trained"]
    # the default fits the taste part only; 'paper' fine-tunes the head, 3 answers and 2 inferred pairs for
    # 10 passes (2 iterations); --iterations overrides that field alone
    assert counts == {"default": 0, "asked": 30, "paper": 2, "paper, asked": 1}


def test_retouch_refuses_out_equal_to_in(photos: list[Path], tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    shutil.copy(photos[0], album / photos[0].name)
    before = (album / photos[0].name).read_bytes()
    one_line_error(run("retouch", str(album), str(album), "--device", "cpu"), "OUT is the input folder")
    assert (album / photos[0].name).read_bytes() == before and sorted(album.iterdir()) == [album / photos[0].name]


def test_retouch_fidelity_holds_edits_back(photos: list[Path], tmp_path: Path) -> None:
    from persaes.io.images import load_image

    album = tmp_path / "album"
    album.mkdir()
    _darkened(photos[:1], album)  # a photo the loss wants to change
    original = load_image(album / photos[0].name)
    change = {}
    for fidelity in ("0", "1000"):
        out = tmp_path / f"out{fidelity}"
        result = run("retouch", str(album), str(out), "--steps", "5", "--fidelity", fidelity, "--device", "cpu")
        assert result.exit_code == 0, result.output
        change[fidelity] = float((load_image(out / photos[0].name) - original).abs().mean())
    # held at 1000 the edit stays the identity (only re-encoding noise); free, the loss moves the photo
    assert change["1000"] < 0.01 < change["0"]
    assert run("retouch", str(album), str(tmp_path / "neg"), "--fidelity", "-1").exit_code == 2



def _darkened(photos: list[Path], folder: Path) -> None:
    """Copies of `photos` in `folder`, 1.5 EV under-exposed."""
    from persaes.app.retouch_folder import save_photo
    from persaes.io.images import load_image
    from retouch import expose

    for photo in photos:
        save_photo(expose(load_image(photo)[None], -1.5)[0], folder / photo.name)


def test_retouch_fits_a_profile_on_top_of_the_base_retouch(photos: list[Path], tmp_path: Path) -> None:
    from persaes.core.scorer import resolve_weights

    album = tmp_path / "album"
    album.mkdir()
    _darkened(photos[:1], album)  # a photo the model wants to change (a natural one it keeps as it is)
    profile = str(resolve_weights("generic"))  # a profile file (the generic weights stand in for one)
    outputs = {}
    for name, extra in (("stacked", []), ("alone", ["--base", "none"]), ("generic", ["--profile", "generic"])):
        out = tmp_path / name
        args = ["--profile", profile, *extra] if name != "generic" else extra
        result = run("retouch", str(album), str(out), "--steps", "3", "--device", "cpu", *args)
        assert result.exit_code == 0, result.output
        outputs[name] = (out / photos[0].name).read_bytes()
    # the same model alone (--base none) or as plain --profile generic: one fit; stacked: a second fit on top
    assert outputs["alone"] == outputs["generic"] != outputs["stacked"]
    refused = run("retouch", str(album), str(tmp_path / "net"), "--model", str(tmp_path / "m.safetensors"),
                   "--base", "none")
    assert refused.exit_code == 2 and "--base is for fitted edits" in refused.output


def test_compare_personal_column_is_the_retouch_with_the_profile(photos: list[Path], tmp_path: Path) -> None:
    from persaes.core.scorer import resolve_weights

    album = tmp_path / "album"
    album.mkdir()
    _darkened(photos[:1], album)  # a photo the model wants to change (a natural one it keeps as it is)
    profile = str(resolve_weights("generic"))
    common = ["--steps", "3", "--ops", "exposure,color", "--device", "cpu"]
    result = run("compare", str(album), "--profile", profile, "--out", str(tmp_path / "report"), *common)
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    # the personal column is `persaes retouch --profile`: the generic edit, the profile's on top of it
    again = run("retouch", str(album), str(tmp_path / "again"), "--profile", profile, *common)
    assert again.exit_code == 0, again.output
    personal = (report / "personal" / photos[0].name).read_bytes()
    assert personal == (tmp_path / "again" / photos[0].name).read_bytes()
    assert personal != (report / "generic" / photos[0].name).read_bytes() != (album / photos[0].name).read_bytes()


def test_train_retoucher_then_retouch_with_the_model(photos: list[Path], tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    from persaes.io.images import load_image

    album = tmp_path / "album"
    album.mkdir()
    _darkened(photos, album)  # under-exposed, so the fitted retouch is a real edit for the network to learn
    fast = ("--ops", "exposure,color", "--steps", "10", "--device", "cpu")
    fitted = tmp_path / "fitted"
    assert run("retouch", str(album), str(fitted), *fast).exit_code == 0
    training = tmp_path / "training"
    shutil.copytree(album, training)
    (training / "_variants").mkdir()
    shutil.copy(photos[0], training / "_variants" / "question-material.jpg")  # persaes's own, not the user's photos
    (training / "broken.jpg").write_bytes(b"not a photo")

    def change(folder: Path, against: Path) -> float:
        return sum(float((load_image(folder / p.name) - load_image(against / p.name)).abs().mean())
                   for p in photos) / len(photos)

    for fidelity in ("2", "1000"):
        model = tmp_path / f"net{fidelity}.safetensors"
        result = run("train-retoucher", str(training), "--out", str(model), "--epochs", "100", "--batch-size", "2",
                      "--size", "128", "--fidelity", fidelity, *fast)
        assert result.exit_code == 0, result.output
        assert [line for line in result.stderr.splitlines() if "broken.jpg" in line]  # named, and skipped
        with safe_open(str(model), framework="pt") as handle:
            meta = json.loads(handle.metadata()["persaes"])
        assert meta["edit_settings"]["fidelity"] == float(fidelity) and meta["ops"] == ["exposure", "color"]
        assert meta["trained_on"].startswith(f"{len(photos)} photos") and meta["base"] == "none"
        out = tmp_path / f"out{fidelity}"
        result = run("retouch", str(album), str(out), "--model", str(model), "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert (out / "scores.csv").read_text().count("\n") == len(photos) + 1
        if fidelity == "1000":
            # held so hard that the fitted edits are the identity, the network learns no edit (JPEG re-encoding
            # alone changes about 0.005)
            assert change(out, album) < 0.006
        else:
            # in one pass, the network makes a good part of the edit that `retouch` fits: its output is a third
            # nearer the fitted retouch than the original is (an identity network: no nearer)
            assert change(out, fitted) < 0.67 * change(album, fitted), (change(out, fitted), change(album, fitted))


def test_unknown_ops_are_a_usage_error(photos: list[Path], tmp_path: Path) -> None:
    result = run("retouch", str(photos[0].parent), str(tmp_path / "out"), "--ops", "exposure,sharpen")
    assert result.exit_code == 2 and "sharpen" in result.stderr


def test_retouch_rerun_with_other_settings_stops_until_redo(photos: list[Path], tmp_path: Path) -> None:
    import csv
    import json

    import torch
    from PIL import Image

    from persaes.core.scorer import load_scorer
    from persaes.io.checkpoint import save_checkpoint

    generic = load_scorer("generic", device="cpu")
    with torch.no_grad():
        next(generic.model.head.parameters()).add_(0.01)
    profile = save_checkpoint(tmp_path / "me.safetensors", generic.model, generic.metadata)  # other weights
    album, out = tmp_path / "album", tmp_path / "out"
    album.mkdir()
    # a dark photo, which the fitted exposure edit brightens (the redone identity edit then differs from it)
    Image.open(photos[0]).resize((96, 72)).point(lambda v: v // 4).save(album / "a.jpg", quality=95)
    originals = (album / "a.jpg").read_bytes()
    fast = ["--device", "cpu", "--ops", "exposure"]
    first = run("retouch", str(album), str(out), "--profile", str(profile), "--steps", "1", *fast)
    assert first.exit_code == 0, first.output
    written = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}

    other = run("retouch", str(album), str(out), "--profile", "generic", "--steps", "0", *fast)
    one_line_error(other, str(out), "1 photo there was made with other settings", f"model {profile} -> generic",
                    "steps 1 -> 0", "pass --redo")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == written  # nothing written

    redone = run("retouch", str(album), str(out), "--profile", "generic", "--steps", "0", "--redo", *fast)
    assert redone.exit_code == 0 and "1 photos retouched" in redone.stdout, redone.output
    (row,) = csv.DictReader(open(out / "scores.csv", encoding="utf-8"))
    assert row["model"] == "generic" and json.loads(row["settings"])["steps"] == 0
    assert (out / "a.jpg").read_bytes() != written["a.jpg"][0] and (album / "a.jpg").read_bytes() == originals
    again = run("retouch", str(album), str(out), "--profile", "generic", "--steps", "0", *fast)
    assert again.exit_code == 0 and "0 photos retouched" in again.stdout and "1 already done" in again.stdout


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_demo_on_a_reduced_album_writes_a_self_contained_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "--photos", "2", "--steps", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "profile.safetensors").is_file() and (out / "report" / "contact_sheet.png").is_file()
    page = (out / "report" / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert len(parser.links) == 6
    assert all(not re.match(r"^[a-z]+://", link) and (out / "report" / link).is_file() for link in parser.links)
    assert "report of 2 photos" in result.stdout
    from persaes.core.train import PERSONAL_PRESETS
    from persaes.io.checkpoint import read_checkpoint

    training = read_checkpoint(out / "profile.safetensors")[1]["training"]
    # the default personal stage, with strengths the example answers chose
    assert training["personal"] == PERSONAL_PRESETS["taste"].as_dict() and training["taste_strength"]["style_l2"]


# -- progress, one style of messages, unreadable album photos -------------------------------------------------------

PROGRESS_LINE = re.compile(r"(?P<run>[a-z ]+): (?P<done>\d+)/(?P<total>\d+)( [a-z]+)? \((\d+ min )?\d+ s\)")


@pytest.fixture(scope="module")
def small_album(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three fixture photos and answers that rank them."""
    return chained_album(photos[:3], tmp_path_factory.mktemp("small"))


def _long_command(name: str, album: Path, prefs: Path, out: Path) -> list[str]:
    from persaes.core.scorer import resolve_weights

    fast = ["--steps", "0", "--device", "cpu"]
    return {
        "score": ["score", str(album), "--device", "cpu"],
        "personalize": ["personalize", str(album), "--prefs", str(prefs), "--out", str(out / "me.safetensors"),
                        "--device", "cpu"],
        "retouch": ["retouch", str(album), str(out / "retouched"), *fast],
        "train-retoucher": ["train-retoucher", str(album), "--out", str(out / "net.safetensors"), "--epochs", "1",
                            "--size", "32", *fast],
        "compare": ["compare", str(album), "--profile", str(resolve_weights("generic")), "--out", str(out / "report"),
                    "--limit", "2", *fast],
        "demo": ["demo", "--out", str(out / "demo"), "--photos", "1", *fast],
    }[name]


@pytest.mark.parametrize("name, runs", [
    ("score", ["scoring: 3/3 photos"]),
    ("personalize", ["album features: 3/3 photos", "personal stage: 1/1"]),
    ("retouch", ["retouching: 3/3 photos"]),
    ("train-retoucher", ["fitting edits: 3/3 photos", "training: 1/1 steps"]),
    ("compare", ["retouching: 2/2 photos"]),  # both columns of a photo at once
    ("demo", ["album features: ", "personal stage: 1/1", "retouching: 1/1 photos"]),
])
def test_long_commands_show_plain_progress_lines_or_none_when_quiet(small_album: tuple[Path, Path], tmp_path: Path,
                                                                    name: str, runs: list[str]) -> None:
    album, prefs = small_album
    result = run(*_long_command(name, album, prefs, tmp_path / "shown"))
    assert result.exit_code == 0, result.output
    # off a terminal (a log, CliRunner): one plain line per step, counts and elapsed time, no carriage return
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(PROGRESS_LINE.fullmatch(line) for line in lines), lines
    ends = [line.split(" (")[0] for line in lines if (m := PROGRESS_LINE.fullmatch(line)) and m["done"] == m["total"]]
    assert len(ends) == len(runs) and all(end.startswith(expected) for end, expected in zip(ends, runs)), ends
    counts = [(m["run"], int(m["done"])) for m in map(PROGRESS_LINE.fullmatch, lines)]
    starts = [i for i, (_, done) in enumerate(counts) if done == 0]
    for start, stop in zip(starts, [*starts[1:], len(counts)]):
        steps = counts[start:stop]  # from 0 up to its total, one line per step (per batch of features)
        assert len({label for label, _ in steps}) == 1 and [d for _, d in steps] == sorted({d for _, d in steps}), steps
    quiet = run("--quiet", *_long_command(name, album, prefs, tmp_path / "quiet"))
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert len(quiet.stdout.splitlines()) == len(result.stdout.splitlines())


def test_errors_and_warnings_share_click_s_style(photos: list[Path], tmp_path: Path) -> None:
    usage = run("retouch", str(tmp_path), str(tmp_path / "out"), "--ops", "exposure,sharpen")
    (reason,) = [line for line in usage.stderr.splitlines() if "sharpen" in line]  # after click's usage lines
    assert usage.exit_code == 2 and reason.startswith("Error: ") and "--ops" in reason
    prefs = tmp_path / "p.jsonl"
    prefs.write_text('{"winner": "a.jpg", "loser": "b.jpg"}\n')
    missing = run("personalize", str(tmp_path / "nope"), "--prefs", str(prefs), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 1 and missing.stderr == f"Error: {tmp_path / 'nope'}: album folder not found\n"
    album = tmp_path / "album"
    album.mkdir()
    shutil.copy(photos[0], album / photos[0].name)
    (album / "broken.jpg").write_bytes(b"not a photo")
    skipped = run("score", str(album), "--device", "cpu")
    assert skipped.exit_code == 1
    assert [line.split(": ")[0:2] for line in skipped.stderr.splitlines() if not PROGRESS_LINE.fullmatch(line)] == [
        ["Warning", str(album / "broken.jpg")], ["Warning", "1 of 2 files could not be scored"]]


def test_personalize_names_unreadable_album_photos_and_does_not_count_them(photos: list[Path],
                                                                          tmp_path: Path) -> None:
    from persaes.io.checkpoint import read_checkpoint

    album = tmp_path / "album"
    album.mkdir()
    for p in photos:
        shutil.copy(p, album / p.name)
    empty, truncated = album / "empty.jpg", album / "truncated.jpg"
    empty.touch()
    truncated.write_bytes(photos[0].read_bytes()[:20_000])
    names = [p.name for p in photos]
    prefs = tmp_path / "answers.jsonl"
    # the empty photo is in no answer (only the album holds it); the truncated one is in one
    prefs.write_text("".join(f'{{"winner": "{w}", "loser": "{lo}"}}\n'
                             for w, lo in [*zip(names, names[1:]), (truncated.name, names[0])]))
    out = tmp_path / "me.safetensors"
    result = run("personalize", str(album), "--prefs", str(prefs), "--out", str(out), "--device", "cpu")
    # as its help says: skipped, each named in a one-line warning, the profile written, exit status 1
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and out.is_file()
    for bad, problem in ((empty, "empty file"), (truncated, "truncated")):
        (line,) = [line for line in result.stderr.splitlines() if bad.name in line]
        assert line.startswith(f"Warning: {bad}: ") and problem in line, line
    assert result.stderr.splitlines()[-1] == "Warning: 2 problems (listed above) were skipped"
    assert f"({len(photos) - 1} answers, " in result.stdout and f", {len(photos)} photos)" in result.stdout
    assert read_checkpoint(out)[1]["trained_on"]["photos"] == len(photos)
