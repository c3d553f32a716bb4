"""A small stand-in for SHARP's `RGBGaussianPredictor` that keeps its forward contract.

Same attribute names, same call order and the same data types as
docs/upstream-contract.md#the-forward-pass describes: `monodepth_model(image)` returns a
`MonodepthOutput` NamedTuple whose `disparity` is `(B, 2, R, R)`, sorted with channel 0
the larger disparity (front), or crossed like SHARP's released model with
`sort_layers=False`; forward turns it into depth as
`disparity_factor / disparity.clamp(1e-4, 1e4)`, calls `depth_alignment` (a no-op
without ground truth), then the initializer, feature model, head and composer, and
returns a `Gaussians3D` NamedTuple in NDC space with N = 2 x (R/2)^2. Like SHARP's
initializer it normalises depth to a minimum of 1 and undoes that at the end, so a
uniform depth scale scales the whole scene.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MonodepthOutput(NamedTuple):
    disparity: torch.Tensor
    encoder_features: list[torch.Tensor]
    decoder_features: torch.Tensor
    output_features: list[torch.Tensor]
    intermediate_features: list[torch.Tensor]


class Gaussians3D(NamedTuple):
    mean_vectors: torch.Tensor
    singular_values: torch.Tensor
    quaternions: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor


class InitializerOutput(NamedTuple):
    feature_input: torch.Tensor
    gaussian_base_values: Gaussians3D
    global_scale: torch.Tensor


class Monodepth(nn.Module):
    def __init__(self, resolution: int, sort_layers: bool) -> None:
        super().__init__()
        self.resolution = resolution
        self.sort_layers = sort_layers
        self.encoder = nn.Conv2d(3, 8, 3, padding=1)
        self.decoder = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, image: torch.Tensor) -> MonodepthOutput:
        encoded = torch.tanh(self.encoder(image * 2 - 1))
        decoded = torch.tanh(self.decoder(encoded))
        disparity = F.softplus(self.head(decoded)) + 0.05
        if self.sort_layers:
            disparity = torch.cat([disparity.max(1, keepdim=True).values,
                                   disparity.min(1, keepdim=True).values], dim=1)
        return MonodepthOutput(disparity, [encoded], decoded, [encoded, decoded], [])

    def internal_resolution(self) -> int:
        return self.resolution


class DepthAlignment(nn.Module):
    def forward(self, monodepth: torch.Tensor, depth: torch.Tensor | None,
                decoder_features: torch.Tensor | None = None):
        return monodepth, torch.ones_like(monodepth)


class Initializer(nn.Module):
    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> InitializerOutput:
        global_scale = depth.amin(dim=(1, 2, 3), keepdim=True).clamp(max=100.0)
        normalized = depth / global_scale
        half = F.avg_pool2d(normalized, 2)
        b, layers, h, w = half.shape
        v, u = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=depth.device),
                              torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=depth.device),
                              indexing="ij")
        z = half.reshape(b, layers * h * w)
        means = torch.stack([u.repeat(layers, 1, 1).reshape(-1) * z,
                             v.repeat(layers, 1, 1).reshape(-1) * z, z], dim=-1)
        scales = (z / h).unsqueeze(-1).expand(b, -1, 3)
        base = Gaussians3D(means, scales, torch.zeros(b, z.shape[1], 4, device=depth.device),
                           torch.zeros(b, z.shape[1], 3, device=depth.device),
                           torch.zeros(b, z.shape[1], device=depth.device))
        feature_input = torch.cat([image, 1.0 / normalized], dim=1)
        return InitializerOutput(feature_input, base, global_scale.reshape(b))


class FeatureModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 8, 3, padding=1)

    def forward(self, feature_input: torch.Tensor, encodings: list[torch.Tensor]) -> torch.Tensor:
        return torch.tanh(self.conv(feature_input) + encodings[-1])


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 2 * 14, 2, stride=2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv(features)
        b, _, h, w = out.shape
        return out.reshape(b, 2, 14, h, w).permute(0, 1, 3, 4, 2).reshape(b, 2 * h * w, 14)


class Composer(nn.Module):
    def forward(self, delta: torch.Tensor, base_values: Gaussians3D,
                global_scale: torch.Tensor) -> Gaussians3D:
        scale = global_scale[:, None, None]
        means = (base_values.mean_vectors + 0.01 * torch.tanh(delta[..., 0:3])) * scale
        scales = base_values.singular_values * torch.exp(0.3 * torch.tanh(delta[..., 3:6])) * scale
        quaternions = F.normalize(delta[..., 6:10] + torch.tensor([2.0, 0, 0, 0]), dim=-1)
        colors = torch.sigmoid(delta[..., 10:13])
        opacities = torch.sigmoid(delta[..., 13])
        return Gaussians3D(means, scales, quaternions, colors, opacities)


class SharpDouble(nn.Module):
    """The stand-in predictor; `calls` counts forwards (tests use it to see work done)."""

    def __init__(self, resolution: int = 64, sort_layers: bool = True) -> None:
        super().__init__()
        self.monodepth_model = Monodepth(resolution, sort_layers)
        self.depth_alignment = DepthAlignment()
        self.init_model = Initializer()
        self.feature_model = FeatureModel()
        self.prediction_head = Head()
        self.gaussian_composer = Composer()
        self.calls = 0

    def forward(self, image: torch.Tensor, disparity_factor: torch.Tensor,
                depth: torch.Tensor | None = None) -> Gaussians3D:
        self.calls += 1
        out = self.monodepth_model(image)
        factor = disparity_factor[:, None, None, None]
        monodepth = factor / out.disparity.clamp(min=1e-4, max=1e4)
        monodepth, _ = self.depth_alignment(monodepth, depth, out.decoder_features)
        init = self.init_model(image, monodepth)
        features = self.feature_model(init.feature_input, encodings=out.output_features)
        delta = self.prediction_head(features)
        return self.gaussian_composer(delta=delta, base_values=init.gaussian_base_values,
                                      global_scale=init.global_scale)

    def internal_resolution(self) -> int:
        return self.monodepth_model.internal_resolution()


def build(resolution: int = 64, sort_layers: bool = True, seed: int = 0) -> SharpDouble:
    """The factory named in test configs as `tests.support.sharp_double:build`."""
    torch.manual_seed(seed)
    return SharpDouble(resolution, sort_layers).eval()
