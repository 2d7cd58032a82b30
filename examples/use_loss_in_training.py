"""Train someone else's enhancement network against the persaes aesthetic loss.

    python examples/use_loss_in_training.py [--profile me.safetensors] [--steps 30]

The network below stands in for any enhancement model of your own: persaes only supplies
the loss ``10 − f(x)`` (``AestheticLoss``), which takes B×3×H×W images in [0, 1] of any size
and passes gradients to every pixel. A fidelity term keeps the output close to the input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from persaes import AestheticLoss
from persaes.core.model import resize_square
from persaes.io.images import iter_images, load_image


class TinyEnhancer(nn.Module):
    """A small residual CNN: x + 0.1·tanh(conv(x)), clamped to [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1 * torch.tanh(self.body(x))).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="generic", help="a profile .safetensors, or 'generic'")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    photos = [p for p in iter_images([Path(__file__).parent / "album"]) if "_variants" not in p.parts][:8]
    batch = torch.cat([resize_square(load_image(p, max_side=256)[None], 160) for p in photos])
    net = TinyEnhancer()
    loss_fn = AestheticLoss(args.profile, device="cpu")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(args.steps + 1):
        enhanced = net(batch)
        aesthetic = loss_fn(enhanced)
        loss = aesthetic + 1.0 * (enhanced - batch).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step:3d}  aesthetic loss {aesthetic.item():.3f}  (mean score {10 - aesthetic.item():.2f})")


if __name__ == "__main__":
    main()
