"""Make the example album's variants and answers from a simulated user (reproducible).

    python examples/make_answers.py

The user is ``persaes.eval.simulate.TASTES["bright-and-vivid"]``: taste = mean luminance +
colourfulness (Hasler–Süsstrunk), with Gaussian noise (std 0.02) on each answer. For each
of the 24 photos in ``examples/album`` two random mild edits are written to
``examples/album/_variants/`` (the same place ``persaes prefs collect --variants`` puts
them); the 100 answers are the 72 within-photo pairs (original and its two variants)
plus 28 random pairs of different originals, written to ``examples/answers.jsonl``
through the same preference file format the preference page writes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from persaes.app.variants import VARIANTS_DIR, is_variant, write_variant
from persaes.eval.simulate import TASTES
from persaes.io.images import iter_images, load_image
from persaes.io.preferences import sample_pairs

HERE = Path(__file__).parent
ALBUM = HERE / "album"
ANSWERS = HERE / "answers.jsonl"
SEED = 0


def main() -> None:
    shutil.rmtree(ALBUM / VARIANTS_DIR, ignore_errors=True)
    ANSWERS.unlink(missing_ok=True)
    originals = [p.relative_to(ALBUM).as_posix() for p in iter_images([ALBUM])]
    originals = [key for key in originals if not is_variant(key)]
    pairs: list[tuple[str, str]] = []
    for n, key in enumerate(originals):
        image = load_image(ALBUM / key)[None]
        group = [key] + [write_variant(ALBUM, key, image, SEED * 1000 + n) for _ in range(2)]
        pairs += [(group[0], group[1]), (group[0], group[2]), (group[1], group[2])]
    pairs += sample_pairs(originals, 100 - len(pairs), SEED)
    random.Random(SEED).shuffle(pairs)
    TASTES["bright-and-vivid"].answer(ALBUM, pairs, ANSWERS, seed=SEED)
    print(f"{len(pairs)} answers written to {ANSWERS}")


if __name__ == "__main__":
    main()
