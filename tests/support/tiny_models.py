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


def tiny_depth_anything_config():
    """Depth Anything V2's metric head on a tiny Dinov2 backbone (patch 14, like the real one)."""
    from transformers import DepthAnythingConfig

    backbone = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=4,
                    num_attention_heads=2, image_size=56, patch_size=14, mlp_ratio=2,
                    out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    return DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="metric", max_depth=20)


def save_tiny_depth_anything(folder: Path, seed: int = 0) -> Path:
    """A tiny `DepthAnythingForDepthEstimation` (metric) saved as a local model folder.

    Its head is re-drawn with a wider spread: at the library's initialisation the ReLU
    before the last layer zeroes everything and the map comes out flat (max_depth / 2).
    """
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(tiny_depth_anything_config()).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


def install_in_hub_cache(folder: Path, repo_id: str, cache_dir: Path) -> Path:
    """Put a saved model folder into `cache_dir` in the Hugging Face hub's cache layout, as
    if `repo_id` had been downloaded there (`huggingface_hub` finds it offline)."""
    import shutil

    from tests.support.fake_hub import COMMIT

    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    return snapshot
