"""Speed of the method's building blocks at AVA scale (figures, not tests).

    python benchmarks/components.py
    python benchmarks/components.py --parts faiss      # needs faiss-cpu (persaes[scale])
    python benchmarks/components.py --parts distributed

* KNN: exact cosine search of 100 queries among 255,000 references of 1280 dimensions
  (AVA's size, the default backbone's pooled features), K = 50, after one warm-up search.
* Transitivity: one-step expansion of about 20,000 random answers over 10,000 images.
* Active questions: choosing the next pair for an album of 1,000 photos after 200 answers
  (``persaes.core.active.ActivePairs``, 21 style statistics + 16 content components), the mean of
  20 choices; the page asks for it after every answer.
* FAISS (``--parts faiss``, not run by default): ``ApproximateKnnIndex`` on the same 255,000 × 1280 random
  references and 100 queries: recall@50 against the exact search, build and query seconds and index bytes
  beside the exact search's; ``--factory SQ8 --factory "IVF256,Flat:nprobe=128"`` picks the FAISS indexes
  (``FACTORY:PARAMS``).
* Distributed (``--parts distributed``, not run by default): ``persaes train-generic``'s feature
  extraction (photos/s) and training (references/s) on 1 and 2 torchrun processes of one thread each,
  their ratio, and the CPU cost per photo that bounds a GPU rank (``benchmarks/distributed_throughput.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from persaes.core.active import ActivePairs
from persaes.core.knn import KnnIndex
from persaes.io.preferences import expand_transitive


def faiss_part(factories: list[str]) -> dict[str, object]:
    from persaes.core.knn import ApproximateKnnIndex

    torch.manual_seed(0)
    features, ids = torch.randn(255_000, 1280), [str(i) for i in range(255_000)]
    queries = torch.randn(100, 1280)
    exact = KnnIndex(features, ids)
    exact.search(queries, 50)
    start = time.perf_counter()
    truth = exact.search(queries, 50)[1]
    report: dict[str, object] = {"exact": {"query_100_s": round(time.perf_counter() - start, 3),
                                           "bytes": exact.features.numel() * exact.features.element_size()}}
    for spec in factories:
        factory, _, params = spec.partition(":")
        start = time.perf_counter()
        index = ApproximateKnnIndex(features, ids, factory=factory, params=params)
        build_s = time.perf_counter() - start
        index.search(queries, 50)
        start = time.perf_counter()
        found = index.search(queries, 50)[1]
        query_s = time.perf_counter() - start
        recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)) / truth.numel()
        report[spec] = {"recall_at_50": round(recall, 4), "build_s": round(build_s, 1),
                        "query_100_s": round(query_s, 3), "bytes": index.nbytes}
        del index
    return {"faiss_255000_refs_1280d": report}


def core_part() -> dict[str, object]:
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
    return {"knn_100_queries_255000_refs_s": round(knn_s, 3), "threads": torch.get_num_threads(),
            "transitivity_answers": len(answers), "transitivity_inferred": len(expansion.inferred),
            "transitivity_s": round(transitive_s, 3), "active_choice_1000_photos_s": round(choose_s, 4)}


def distributed_part() -> dict[str, object]:
    from distributed_throughput import measure  # benchmarks/, beside this script

    return {"distributed_train_generic": measure()}


PARTS = {"core": lambda args: core_part(), "faiss": lambda args: faiss_part(args.factory or ["SQ8"]),
         "distributed": lambda args: distributed_part()}
"""The parts ``--parts`` names, each given the parsed arguments."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="core", help=f"comma-separated, of {', '.join(PARTS)} (default: core)")
    parser.add_argument("--factory", action="append", help="FAISS index of the faiss part, FACTORY[:PARAMS]; "
                        "repeatable (default: SQ8)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown:
        parser.error(f"--parts: choose from {', '.join(PARTS)}; got {args.parts!r}")
    report: dict[str, object] = {}
    for part in parts:
        report.update(PARTS[part](args))
    report.setdefault("threads", torch.get_num_threads())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
