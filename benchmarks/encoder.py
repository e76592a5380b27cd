"""Encoder speed: l4p's VideoEncoder vs transformers.VideoMAEModel with identical weights.

Prints, from one run on one machine: seconds per 16x224x224 clip for both in float32 (and in
bf16 where the CPU/GPU runs bf16 matmuls fast), their ratios, the relative error of the final
tokens against the float32 reference, and the achieved GFLOP/s as a fraction of a plain matmul
of the same precision measured in the same run.

    python benchmarks/encoder.py [--preset videomae-base] [--repeats 3] [--threads N] [--bf16 auto|on|off]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from l4p_framework.encoder import bf16_supported, build_encoder, get_preset, load_encoder


def encoder_flops(config, frames: int, height: int, width: int) -> float:
    """Multiply-adds x 2 of one forward: patch embedding, qkv/proj/MLP linears, attention."""
    n = (frames // config.tubelet) * (height // config.patch_size) * (width // config.patch_size)
    c, m = config.width, config.mlp_dim
    patch = 2 * n * c * 3 * config.tubelet * config.patch_size**2
    per_block = 2 * n * c * 3 * c + 2 * n * c * c + 2 * 2 * n * c * m + 2 * 2 * n * n * c
    return patch + config.depth * per_block


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return 2 * size**3 / timeit(lambda: a @ b, repeats) / 1e9


def hf_model(encoder):
    import transformers

    c = encoder.config
    config = transformers.VideoMAEConfig(
        image_size=c.image_size[0],
        patch_size=c.patch_size,
        num_frames=c.num_frames,
        tubelet_size=c.tubelet,
        hidden_size=c.width,
        num_hidden_layers=c.depth,
        num_attention_heads=c.num_heads,
        intermediate_size=c.mlp_dim,
        use_mean_pooling=False,
        layer_norm_eps=c.norm_eps,
        attn_implementation="sdpa",
    )
    model = transformers.VideoMAEModel(config).eval()
    state = {}
    for i in range(c.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = encoder.state_dict()[src + "attn.qkv.weight"].chunk(3)
        state |= {
            dst + "attention.attention.query.weight": q,
            dst + "attention.attention.key.weight": k,
            dst + "attention.attention.value.weight": v,
            dst + "attention.attention.query.bias": encoder.state_dict()[src + "attn.q_bias"],
            dst + "attention.attention.value.bias": encoder.state_dict()[src + "attn.v_bias"],
        }
        for old, new in (
            ("attn.proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
        ):
            for n in ("weight", "bias"):
                state[f"{dst}{new}.{n}"] = encoder.state_dict()[f"{src}{old}.{n}"]
    for n in ("weight", "bias"):
        state[f"embeddings.patch_embeddings.projection.{n}"] = encoder.state_dict()[f"patch_embed.proj.{n}"]
        state[f"layernorm.{n}"] = encoder.state_dict()[f"norm.{n}"]
    model.load_state_dict(state, strict=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="videomae-base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    frames, (height, width) = config.num_frames, config.image_size
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"preset {config.name}: {frames}x{height}x{width} clip, {encoder_flops(config, frames, height, width) / 1e9:.1f} GFLOP"
    )

    reference = build_encoder(config, seed=0).freeze()
    with torch.no_grad():  # non-trivial biases so both paths use them
        for name, p in reference.named_parameters():
            if "bias" in name:
                p.normal_(0, 0.02)
    reference._fingerprint = None
    model = hf_model(reference)
    video = torch.rand(1, 3, frames, height, width)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1, 1)
    pixels = ((video - mean) / std).transpose(1, 2).contiguous()
    flops = encoder_flops(config, frames, height, width)

    with torch.no_grad():
        ref_tokens = reference(video, ["final"])["final"]
        t_l4p = timeit(lambda: reference(video, ["final"]), args.repeats)
        t_hf = timeit(lambda: model(pixel_values=pixels), args.repeats)
    rate32 = matmul_rate(torch.float32)
    print("\nfloat32")
    print(
        f"  transformers  {t_hf:7.3f} s/clip  {flops / t_hf / 1e9:7.1f} GFLOP/s ({flops / t_hf / 1e9 / rate32:.0%} of matmul {rate32:.0f} GFLOP/s)"
    )
    print(
        f"  l4p           {t_l4p:7.3f} s/clip  {flops / t_l4p / 1e9:7.1f} GFLOP/s ({flops / t_l4p / 1e9 / rate32:.0%} of matmul)"
    )
    print(f"  ratio transformers/l4p = {t_hf / t_l4p:.2f}x (goal >= 1.00)")

    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and bf16_supported())
    if not use_bf16:
        print(
            "\nbf16: skipped — this CPU has no fast bf16 matmul (no AMX / AVX512-BF16; "
            f"a bf16 2048^2 matmul here runs at {matmul_rate(torch.bfloat16, 512, 1):.1f} GFLOP/s). Use --bf16 on to force."
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        from l4p_framework.encoder import save_encoder

        path = save_encoder(reference, f"{tmp}/enc.safetensors")
        fast = load_encoder(path, precision="bf16")
    with torch.no_grad():
        tokens = fast(video, ["final"])["final"]
        t_fast = timeit(lambda: fast(video, ["final"]), args.repeats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t_hf16 = timeit(lambda: model(pixel_values=pixels), args.repeats)
    rel = ((tokens - ref_tokens).norm() / ref_tokens.norm()).item()
    rate16 = matmul_rate(torch.bfloat16)
    print("\nbf16")
    print(
        f"  transformers (autocast)  {t_hf16:7.3f} s/clip  {flops / t_hf16 / 1e9:7.1f} GFLOP/s ({flops / t_hf16 / 1e9 / rate16:.0%} of bf16 matmul {rate16:.0f} GFLOP/s)"
    )
    print(
        f"  l4p (bf16 weights)       {t_fast:7.3f} s/clip  {flops / t_fast / 1e9:7.1f} GFLOP/s ({flops / t_fast / 1e9 / rate16:.0%} of bf16 matmul)"
    )
    print(f"  ratio transformers/l4p = {t_hf16 / t_fast:.2f}x (goal >= 1.30)")
    print(f"  relative error of final tokens vs float32: {rel:.2e} (goal < 2e-2)")


if __name__ == "__main__":
    main()
