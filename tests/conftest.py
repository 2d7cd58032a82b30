"""Shared fixtures: real photos shipped in tests/fixtures, models built once per session."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = FIXTURES / "photos"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the feature cache of tests out of the user's home, for every fixture (session-wide,
    so module-scoped fixtures that personalize do not read features an older persaes left there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSAES_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        yield


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Four real Pixabay photos (OASIS): Bird3, Car1, Cat3, Dog2."""
    return sorted(PHOTOS.glob("*.jpg"))


@pytest.fixture(scope="session")
def pretrained_model():
    """The default backbone with its shipped ImageNet weights and a fresh head."""
    from persaes.core.backbones import create_backbone, get_spec
    from persaes.core.model import AestheticModel, AttentionHead

    spec = get_spec("efficientnet_lite2")
    torch.manual_seed(0)
    return AestheticModel(spec, create_backbone(spec.name, "pretrained"), AttentionHead(spec.channels)).eval()


@pytest.fixture(scope="session")
def random_model():
    """The default backbone with random weights (layout and gradient tests)."""
    from persaes.core.backbones import create_backbone, get_spec
    from persaes.core.model import AestheticModel, AttentionHead

    spec = get_spec("efficientnet_lite2")
    torch.manual_seed(0)
    return AestheticModel(spec, create_backbone(spec.name, "random"), AttentionHead(spec.channels)).eval()


@pytest.fixture()
def running() -> Callable[[object], AbstractContextManager]:
    """``with running(session) as server``: a preference-page server for a ``CollectSession``,
    on a free port in a thread for the block."""
    from persaes.app.collect import serve

    @contextmanager
    def run(session: object) -> Iterator[object]:
        server = serve(session)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    return run
