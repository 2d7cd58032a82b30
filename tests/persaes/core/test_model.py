from __future__ import annotations

import pytest
import torch

from persaes.core.model import STATS, THUMB, AttentionHead, QualityNet, distribution_to_score, image_statistics
from retouch import degrade, over_process


@pytest.mark.parametrize("size", [(260, 260), (123, 457), (600, 400), (32, 32)])
def test_any_input_size_gives_scores_in_range(random_model, size: tuple[int, int]) -> None:
    with torch.no_grad():
        p = random_model(torch.rand(2, 3, *size))
    assert p.shape == (2, 10) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)
    s = distribution_to_score(p)
    assert ((s >= 1) & (s <= 10)).all()


def test_score_extremes() -> None:
    p = torch.zeros(2, 10)
    p[0, 0] = 1
    p[1, 9] = 1
    assert distribution_to_score(p).tolist() == [1.0, 10.0]


def test_input_gradients_are_finite_and_nonzero(pretrained_model) -> None:
    x = torch.rand(1, 3, 300, 280, requires_grad=True)
    pretrained_model.score(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_attention_maps_weight_positions() -> None:
    head = AttentionHead((8, 16, 32), hidden=4)
    z1, z2, z3 = torch.rand(2, 8, 9, 9), torch.rand(2, 16, 5, 5), torch.rand(2, 32)
    a1, a2 = head.attention_maps(z1, z2, z3)
    assert a1.shape == (2, 1, 9, 9) and a2.shape == (2, 1, 5, 5)
    assert ((a1 > 0) & (a1 < 1)).all() and a1.std() > 0
    plain = AttentionHead((8, 16, 32), hidden=4, attention=False)
    b1, b2 = plain.attention_maps(z1, z2, z3)
    assert torch.equal(b1, torch.ones_like(b1)) and torch.equal(b2, torch.ones_like(b2))
    assert not any("a1" in name for name, _ in plain.named_parameters())


def test_head_rejects_unpooled_z3() -> None:
    head = AttentionHead((8, 16, 32), hidden=4)
    with pytest.raises(ValueError, match="pooled"):
        head(torch.rand(1, 8, 9, 9), torch.rand(1, 16, 5, 5), torch.rand(1, 32, 3, 3), torch.rand(1, STATS),
             torch.rand(1, 3, THUMB, THUMB))


def test_preprocess_rejects_non_rgb(random_model) -> None:
    with pytest.raises(ValueError, match=r"image must have shape \(B, 3, H, W\)"):
        random_model(torch.rand(1, 4, 64, 64))


def test_image_statistics_read_tone_colour_and_haze() -> None:
    flat = image_statistics(torch.full((1, 3, 16, 16), 0.5))[0]
    assert flat.shape == (STATS,)
    assert torch.allclose(flat[:9], torch.full((9,), 0.5).index_fill(0, torch.tensor([1]), 0.0), atol=1e-6)
    assert torch.allclose(flat[14:20], torch.zeros(6), atol=1e-6)  # no cast, no saturation, no channel clipped
    assert torch.allclose(flat[19:], torch.zeros(2), atol=1e-6)  # no edges
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 32, 32, generator=g) * 0.6 + 0.2
    over = image_statistics(degrade(photo, "over", 1)[0])[0]
    under = image_statistics(degrade(photo, "under", 1)[0])[0]
    base = image_statistics(photo)[0]
    assert under[0] < base[0] < over[0]  # mean luma
    assert over[9] > base[9] and under[10] > base[10]  # clipped highlights, crushed shadows
    warm = photo * torch.tensor([1.2, 1.0, 0.8])[:, None, None]
    assert image_statistics(warm.clamp(0, 1))[0, 14] > base[14]  # red cast
    hazy = image_statistics(degrade(photo, "haze", 1)[0])[0]
    assert hazy[13] > base[13]  # dark channel
    vivid = image_statistics(over_process(photo, "over-saturate", "strong", 1)[0])[0]
    assert vivid[17] > base[17]  # saturation quantile
    sharp = image_statistics(over_process(photo, "over-sharpen", "strong", 1)[0])[0]
    assert sharp[19] > base[19] and sharp[18] > base[18]  # Laplacian; channels clipped by the overshoot


def test_image_statistics_laplacian_is_the_replicate_padded_3x3_kernel() -> None:
    image = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    grey = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2])[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    laplacian = torch.nn.functional.conv2d(torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate"), kernel)
    assert torch.allclose(image_statistics(image)[:, 19], laplacian.abs().mean(dim=(1, 2, 3)), atol=1e-6)


def test_image_statistics_pass_gradients() -> None:
    x = torch.rand(2, 3, 24, 20, requires_grad=True)
    image_statistics(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_quality_branch_is_standardised_and_moves_the_score() -> None:
    head = AttentionHead((8, 16, 32), hidden=4, dropout=0.0).eval()
    sample = torch.rand(50, STATS) * 3 + 2
    head.standardize_stats(sample)
    assert torch.allclose(head.stats_mean, sample.mean(0)) and torch.allclose(head.stats_scale, sample.std(0))
    z = torch.rand(1, 8, 9, 9), torch.rand(1, 16, 5, 5), torch.rand(1, 32)
    thumb = torch.rand(1, 3, THUMB, THUMB)
    with torch.no_grad():
        one, other = (distribution_to_score(head(*z, s[None], thumb)) for s in sample[:2])
        brighter = distribution_to_score(head(*z, sample[:1], (thumb + 0.3).clamp(0, 1)))
    # the default branch reads the statistics alone; the thumbnail reaches it only through them
    assert not torch.allclose(one, other) and torch.equal(one, brighter)
    with pytest.raises(ValueError, match="statistics"):
        head.standardize_stats(torch.rand(1, STATS))


def test_content_grad_scales_only_the_content_paths_gradient() -> None:
    torch.manual_seed(0)
    head = AttentionHead((8, 16, 32), hidden=4, quality_width=4).eval()
    inputs = (torch.rand(3, 8, 6, 6), torch.rand(3, 16, 6, 6), torch.rand(3, 32), torch.rand(3, STATS),
              torch.rand(3, 3, THUMB, THUMB))
    grads, outputs = {}, {}
    for share in (1.0, 0.5, 0.0):
        head.zero_grad()
        out = head(*inputs, content_grad=share)
        distribution_to_score(out).sum().backward()
        outputs[share] = out.detach()
        grads[share] = {name: p.grad.clone() for name, p in head.named_parameters()}
    # the output never changes; the content path's gradient is scaled, the quality branch's is not
    assert torch.equal(outputs[1.0], outputs[0.5]) and torch.equal(outputs[1.0], outputs[0.0])
    for name in ("fc.weight", "a2_in.weight", "context.weight"):
        assert grads[1.0][name].abs().sum() > 0
        assert torch.allclose(grads[0.5][name], 0.5 * grads[1.0][name], atol=1e-7)
        assert not grads[0.0][name].any()
    for name in ("quality.mlp.0.weight", "quality.mlp.2.bias", "quality.conv.0.weight"):
        assert grads[0.0][name].abs().sum() > 0 and torch.allclose(grads[0.0][name], grads[1.0][name])


def test_quality_net_passes_finite_gradients_to_the_thumbnail() -> None:
    net = QualityNet(width=4, hidden=8)
    thumb = torch.rand(2, 3, THUMB, THUMB, requires_grad=True)
    net(torch.rand(2, STATS), thumb).sum().backward()
    assert torch.isfinite(thumb.grad).all() and thumb.grad.abs().sum() > 0


def test_quality_net_without_cnn_reads_only_the_statistics() -> None:
    net = QualityNet(hidden=8)
    assert net.conv is None and not any("conv" in name for name, _ in net.named_parameters())
    stats = torch.rand(2, STATS, requires_grad=True)
    out = net(stats, torch.rand(2, 3, THUMB, THUMB))
    assert torch.equal(out, net(stats, torch.zeros(2, 3, THUMB, THUMB)))
    out.sum().backward()
    assert torch.isfinite(stats.grad).all() and stats.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="width"):
        QualityNet(width=-1)
