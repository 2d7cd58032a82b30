"""``persaes ARGS...`` as one rank of a torchrun job whose rank 1 is killed (SIGKILL) mid-extraction.

Rank 1 dies right after caching its ``KILL_AFTER``-th feature, as a machine that goes down would; torchrun
then stops the other ranks. Used by test_distributed_train.py:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/cli/killed_rank.py train-generic ...
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    from persaes.cli.main import main as persaes

    from persaes.core.features import FeatureCache

    if os.environ.get("RANK") == "1":
        put, after, done = FeatureCache.put, int(os.environ["KILL_AFTER"]), []

        def put_then_die(self: FeatureCache, digest: str, feats: object) -> None:
            put(self, digest, feats)
            done.append(digest)
            if len(done) >= after:
                os.kill(os.getpid(), signal.SIGKILL)

        FeatureCache.put = put_then_die  # type: ignore[method-assign]
    persaes(sys.argv[1:], prog_name="persaes")


if __name__ == "__main__":
    main()
