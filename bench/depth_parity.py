"""Output parity of our two Depth Pro backends given the very same weights.

    python bench/depth_parity.py [--size small|full] [--fp16] [--repeat 1] [--max-side 512]

Builds Apple's `depth_pro.DepthPro` with seeded random weights, converts its state dict
to the `transformers` layout (the key mapping of transformers' own Depth Pro conversion
script, rewritten for the module names of the installed transformers), loads it into
`DepthProForDepthEstimation`, runs both through OUR backends (`AppleDepthPro.estimate`
and `TransformersDepth.estimate`) on the same photo, and prints the difference in
canonical inverse depth and field of view, plus the time of each forward.

`--size small` is a narrow, shallow model on the real 1536 x 1536 grid (seconds on a
CPU); `--size full` is the real 952 M-parameter architecture (2.5 to 10 minutes per
forward on 2 CPU cores, depending on what else runs; 8.7 GB peak memory). Needs Apple's
`depth_pro` (the `depth-pro-apple` extra); without it this prints a "skipped" line and
exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.depth.apple_backend import AppleDepthPro
from pipeline.depth.base import RawDepth
from pipeline.depth.transformers_backend import TransformersDepth
from pipeline.image import load_image

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "example.jpg"


@dataclasses.dataclass(frozen=True)
class Arch:
    """The sizes that Apple's DepthPro and transformers' DepthProConfig must agree on.

    `hooks` are Apple's `encoder_feature_layer_ids[:2]` (transformers lists them reversed);
    `dims` are Apple's `encoder_feature_dims`. transformers ties the first intermediate
    projection to `fusion_hidden_size`, so `dims[0]` must equal `decoder`.
    """

    embed_dim: int
    depth: int
    heads: int
    hooks: tuple[int, int]
    dims: tuple[int, int, int, int]
    decoder: int


FULL = Arch(embed_dim=1024, depth=24, heads=16, hooks=(5, 11), dims=(256, 512, 1024, 1024),
            decoder=256)
SMALL = Arch(embed_dim=64, depth=3, heads=2, hooks=(0, 1), dims=(16, 16, 24, 24), decoder=16)

_VIT = (  # timm ViT (Apple) -> Dinov2 (transformers), inside one encoder
    (r"cls_token", "embeddings.cls_token"),
    (r"pos_embed", "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"blocks\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.o_proj."),
    (r"blocks\.(\d+)\.ls(\d)\.gamma", r"encoder.layer.\1.layer_scale\2.lambda1"),
    (r"blocks\.(\d+)\.", r"encoder.layer.\1."),
    (r"norm\.", "layernorm."),
)
_MODULES = (  # Apple prefix -> transformers prefix
    (r"encoder\.(patch|image)_encoder\.", r"depth_pro.encoder.\1_encoder.model."),
    (r"fov\.encoder\.0\.", "fov_model.fov_encoder.model."),
    (r"fov\.encoder\.1\.", "fov_model.fov_encoder.neck."),
    (r"fov\.downsample\.0\.", "fov_model.conv."),
    (r"fov\.head\.", "fov_model.head.layers."),
    (r"encoder\.upsample_latent0\.", "depth_pro.neck.feature_upsample.intermediate.1.layers."),
    (r"encoder\.upsample_latent1\.", "depth_pro.neck.feature_upsample.intermediate.0.layers."),
    (r"encoder\.upsample0\.", "depth_pro.neck.feature_upsample.scaled_images.2.layers."),
    (r"encoder\.upsample1\.", "depth_pro.neck.feature_upsample.scaled_images.1.layers."),
    (r"encoder\.upsample2\.", "depth_pro.neck.feature_upsample.scaled_images.0.layers."),
    (r"encoder\.upsample_lowres\.", "depth_pro.neck.feature_upsample.image_block.layers.0."),
    (r"encoder\.fuse_lowres\.", "depth_pro.neck.fuse_image_with_low_res."),
    (r"head\.", "head.layers."),
)
_FUSION = (
    (r"resnet(\d)\.residual\.1\.", r"residual_layer\1.convolution1."),
    (r"resnet(\d)\.residual\.3\.", r"residual_layer\1.convolution2."),
    (r"out_conv\.", "projection."),
)


def _vit_key(rest: str) -> str:
    for pattern, repl in _VIT:
        rest, n = re.subn(f"^{pattern}", repl, rest)
        if n:
            return rest
    raise KeyError(rest)


def _decoder_key(key: str) -> str:
    """Apple's decoder runs from its last level to level 0; transformers numbers the other way."""
    if m := re.match(r"decoder\.convs\.(\d+)\.(.+)", key):
        return f"depth_pro.neck.feature_projection.projections.{4 - int(m[1])}.{m[2]}"
    m = re.match(r"decoder\.fusions\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    level, rest = int(m[1]), m[2]
    for pattern, repl in _FUSION:
        rest = re.sub(f"^{pattern}", repl, rest)
    stage = "final" if level == 0 else f"intermediate.{4 - level}"
    return f"fusion_stage.{stage}.{rest}"


def convert_state_dict(apple: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apple `DepthPro` state dict -> `DepthProForDepthEstimation` state dict (qkv split)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in apple.items():
        if key.startswith("decoder."):
            out[_decoder_key(key)] = value
            continue
        for pattern, prefix in _MODULES:
            m = re.match(pattern, key)
            if m:
                new_prefix = m.expand(prefix)
                rest = key[m.end():]
                break
        else:
            raise KeyError(key)
        if ".model." not in new_prefix:
            out[new_prefix + rest] = value
        elif ".attn.qkv." in rest:
            q, k, v = value.chunk(3, dim=0)
            base = re.sub(r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layer.\1.attention.", rest)
            head, leaf = base.rsplit(".", 1)
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{new_prefix}{head}.{name}.{leaf}"] = part
        else:
            out[new_prefix + _vit_key(rest)] = value
    return out


def hf_config(arch: Arch):
    """transformers `DepthProConfig` of `arch`; for FULL it is apple/DepthPro-hf's config."""
    from transformers import DepthProConfig

    vit = dict(model_type="dinov2", hidden_size=arch.embed_dim, num_hidden_layers=arch.depth,
               num_attention_heads=arch.heads, image_size=384, patch_size=16,
               use_mask_token=False)
    return DepthProConfig(
        patch_size=384, fusion_hidden_size=arch.decoder,
        intermediate_hook_ids=[arch.hooks[1], arch.hooks[0]],
        intermediate_feature_dims=[arch.dims[0], arch.decoder],
        scaled_images_feature_dims=[arch.dims[3], arch.dims[2], arch.dims[1]],
        use_fov_model=True, num_fov_head_layers=2, image_model_config=dict(vit),
        patch_model_config=dict(vit), fov_model_config=dict(vit),
    )


def _small_vit(arch: Arch) -> torch.nn.Module:
    from depth_pro.network.vit import make_vit_b16_backbone
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=384, patch_size=16, embed_dim=arch.embed_dim,
                            depth=arch.depth, num_heads=arch.heads, mlp_ratio=4, qkv_bias=True,
                            init_values=1.0, dynamic_img_size=True, num_classes=0)
    return make_vit_b16_backbone(vit, encoder_feature_dims=list(arch.dims),
                                 encoder_feature_layer_ids=list(arch.hooks),
                                 vit_features=arch.embed_dim).model


def apple_model(arch: Arch) -> torch.nn.Module:
    """Apple's DepthPro, no checkpoint: the factory for FULL, its own parts for smaller."""
    import depth_pro
    from depth_pro.depth_pro import DEFAULT_MONODEPTH_CONFIG_DICT, DepthPro
    from depth_pro.network.decoder import MultiresConvDecoder
    from depth_pro.network.encoder import DepthProEncoder

    if arch == FULL:
        config = dataclasses.replace(DEFAULT_MONODEPTH_CONFIG_DICT, checkpoint_uri=None)
        model, _ = depth_pro.create_model_and_transforms(config)
        return model
    encoder = DepthProEncoder(dims_encoder=list(arch.dims), patch_encoder=_small_vit(arch),
                              image_encoder=_small_vit(arch), hook_block_ids=list(arch.hooks),
                              decoder_features=arch.decoder)
    decoder = MultiresConvDecoder(dims_encoder=[arch.decoder, *arch.dims],
                                  dim_decoder=arch.decoder)
    return DepthPro(encoder=encoder, decoder=decoder, last_dims=(32, 1), use_fov_head=True,
                    fov_encoder=_small_vit(arch))


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights that make every layer matter.

    Default inits leave Depth Pro near-trivial (timm's DINOv2 layer scale is 1e-5, so
    the ViTs are almost identities): weights get N(0, 1/fan_in), layer scales 0.2-0.6,
    norms 1 +- 0.1, and the last bias of the depth head is raised so that the final
    ReLU keeps most pixels, giving a relative difference that means something.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if name.endswith("gamma"):
            p.copy_(0.2 + 0.4 * torch.rand(p.shape, generator=g))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * noise)
        elif p.ndim >= 2 and not name.endswith(("pos_embed", "cls_token")):
            p.copy_(noise / math.sqrt(p[0].numel()))
        else:
            p.copy_(0.02 * noise)
    model.head[4].bias.fill_(1.0)


def build_pair(arch: Arch, seed: int = 0) -> tuple[AppleDepthPro, TransformersDepth]:
    """Both backends holding the same seeded weights (transformers' tensors share Apple's)."""
    from transformers import DepthProForDepthEstimation

    apple = apple_model(arch).eval()
    randomize_(apple, seed)
    with torch.device("meta"):
        hf = DepthProForDepthEstimation(hf_config(arch))
    hf.load_state_dict(convert_state_dict(apple.state_dict()), strict=True, assign=True)
    return AppleDepthPro(apple), TransformersDepth(hf.eval(), "x")


def compare(ref: RawDepth, other: RawDepth) -> dict[str, float]:
    """Differences of `other` from `ref`, relative to `ref`'s own scale."""
    a = ref.values.astype(np.float64)
    b = other.values.astype(np.float64)
    diff = np.abs(a - b)
    lit = a > 0.01 * a.max()
    return {
        "max_abs": float(diff.max()),
        "max_rel_to_peak": float(diff.max() / a.max()),
        "mean_rel": float(diff.mean() / np.abs(a).mean()),
        "max_rel_pixel": float((diff[lit] / a[lit]).max()),
        "lit_fraction": float(lit.mean()),
        "fov_ref": float(ref.fov_deg or math.nan),
        "fov_abs_diff": abs(float(ref.fov_deg or math.nan) - float(other.fov_deg or math.nan)),
    }


def timed(backend: AppleDepthPro | TransformersDepth, rgb: torch.Tensor,
          repeat: int) -> tuple[RawDepth, str]:
    """The output and the best wall and CPU seconds of `repeat` runs.

    CPU seconds stay comparable when other processes share the machine; the first run
    also pays one-off kernel setup, so `--repeat 2` is fairer where it is affordable.
    """
    best_wall, best_cpu = math.inf, math.inf
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = backend.estimate(rgb)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return out, f"{best_wall:.2f} s ({best_cpu:.1f} CPU-s)"


def example_rgb(path: Path, max_side: int) -> torch.Tensor:
    """The photo as the pipeline decodes it, shrunk so its longer side is `max_side`."""
    from PIL import Image

    rgb = load_image(path).rgb
    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def _line(label: str, stats: dict[str, float]) -> str:
    return (f"{label}: max|d| {stats['max_abs']:.3e}  max|d|/peak {stats['max_rel_to_peak']:.3e}"
            f"  mean|d|/mean {stats['mean_rel']:.3e}  max pixel rel {stats['max_rel_pixel']:.3e}"
            f" (over {100 * stats['lit_fraction']:.1f}% of pixels >= 1% of peak)"
            f"  fov {stats['fov_ref']:.4f} deg, |d| {stats['fov_abs_diff']:.3e} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--fp16", action="store_true", help="also compare half precision")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="best of N forwards for timing")
    args = parser.parse_args()
    try:
        import depth_pro  # noqa: F401
    except ImportError:
        print("skipped: depth_pro not installed (pip install \"sharp-watch[depth-pro-apple]\")")
        return
    import timm
    import transformers

    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, timm "
          f"{timm.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}")
    arch = FULL if args.size == "full" else SMALL
    start = time.perf_counter()
    apple, hf = build_pair(arch, args.seed)
    n_params = sum(p.numel() for p in apple.model.parameters())
    print(f"{args.size}: {n_params / 1e6:.1f} M parameters, both built and converted in "
          f"{time.perf_counter() - start:.1f} s")
    rgb = example_rgb(args.image, args.max_side)
    print(f"input {args.image.name} {rgb.shape[2]}x{rgb.shape[1]} -> {apple.input_size}^2")
    ref, t_apple = timed(apple, rgb, args.repeat)
    out, t_hf = timed(hf, rgb, args.repeat)
    print(f"fp32 forward: depth_pro {t_apple}, transformers {t_hf}")
    print(_line("fp32 transformers vs depth_pro", compare(ref, out)))
    if args.fp16:
        apple.model.half()
        hf.model.half()
        ref16, t_apple16 = timed(apple, rgb, args.repeat)
        out16, t_hf16 = timed(hf, rgb, args.repeat)
        print(f"fp16 forward: depth_pro {t_apple16}, transformers {t_hf16}")
        print(_line("fp16 transformers vs depth_pro", compare(ref16, out16)))
        print(_line("fp16 vs fp32, depth_pro", compare(ref, ref16)))
        print(_line("fp16 vs fp32, transformers", compare(out, out16)))


if __name__ == "__main__":
    main()
