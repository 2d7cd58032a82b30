"""Speed of the method's building blocks at AVA scale (figures, not tests).

    python benchmarks/components.py

* KNN: exact cosine search of 100 queries among 255,000 references of 1280 dimensions
  (AVA's size, the default backbone's pooled features), K = 50, after one warm-up search.
* Transitivity: one-step expansion of about 20,000 random answers over 10,000 images.
* Active questions: choosing the next pair for an album of 1,000 photos after 200 answers
  (``persaes.core.active.ActivePairs``, 21 style statistics + 16 content components), the mean of
  20 choices; the page asks for it after every answer.
"""

from __future__ import annotations

import json
import random
import sys
import time

import torch

from persaes.core.active import ActivePairs
from persaes.core.knn import KnnIndex
from persaes.io.preferences import expand_transitive


def main() -> int:
    torch.manual_seed(0)
    index = KnnIndex(torch.randn(255_000, 1280), [str(i) for i in range(255_000)])
    queries = torch.randn(100, 1280)
    index.search(queries, 50)
    start = time.perf_counter()
    index.search(queries, 50)
    knn_s = time.perf_counter() - start
    rng = random.Random(0)
    answers = [(f"i{rng.randrange(10_000)}", f"i{rng.randrange(10_000)}") for _ in range(20_000)]
    answers = [(a, b) for a, b in answers if a != b]
    start = time.perf_counter()
    expansion = expand_transitive(answers)
    transitive_s = time.perf_counter() - start
    chooser = ActivePairs([f"p{i}.jpg" for i in range(1000)], torch.randn(1000), torch.randn(1000, 37))
    given: list[tuple[str, str]] = []
    while len(given) < 200:
        given.append(chooser.next_pair(given))
    start = time.perf_counter()
    for _ in range(20):
        given.append(chooser.next_pair(given))
    choose_s = (time.perf_counter() - start) / 20
    print(json.dumps({"knn_100_queries_255000_refs_s": round(knn_s, 3), "threads": torch.get_num_threads(),
                      "transitivity_answers": len(answers), "transitivity_inferred": len(expansion.inferred),
                      "transitivity_s": round(transitive_s, 3), "active_choice_1000_photos_s": round(choose_s, 4)},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
