"""Tiny randomly initialised real models for tests: same code paths, sub-second on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_depth_pro_config():
    from transformers import DepthProConfig

    vit = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               image_size=32, patch_size=8, mlp_ratio=2)
    return DepthProConfig(
        patch_size=32, scaled_images_ratios=[0.5, 1.0], scaled_images_overlap_ratios=[0.0, 0.25],
        scaled_images_feature_dims=[16, 16], intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[16, 16], fusion_hidden_size=16, num_fov_head_layers=1,
        use_fov_model=True, image_model_config=dict(vit), patch_model_config=dict(vit),
        fov_model_config=dict(vit),
    )


def save_tiny_depth_pro(folder: Path, seed: int = 0) -> Path:
    """A tiny `DepthProForDepthEstimation` saved as a local model folder."""
    from transformers import DepthProForDepthEstimation

    torch.manual_seed(seed)
    model = DepthProForDepthEstimation(tiny_depth_pro_config()).eval()
    model.save_pretrained(folder)
    return folder
