"""SAM-style two-way transformer, video mask decoder and the tracking decoder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from l4p_framework.blocks import (
    Attention,
    TrackingDecoder,
    TwoWayAttentionBlock,
    TwoWayTransformer,
    VideoMaskDecoder,
    l4p_tracking_head_to_official,
)
from l4p_framework.errors import InputError

torch.set_num_threads(1)


def ref_attention(attn: Attention, q, k, v):
    """softmax(q k^T / sqrt(d)) v per head, written with an explicit loop over heads."""
    q, k, v = F.linear(q, attn.q_proj.weight, attn.q_proj.bias), attn.k_proj(k), attn.v_proj(v)
    d = q.shape[-1] // attn.heads
    outs = []
    for hd in range(attn.heads):
        sl = slice(hd * d, (hd + 1) * d)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(w @ v[..., sl])
    return attn.out_proj(torch.cat(outs, -1))


def ref_block(blk: TwoWayAttentionBlock, queries, keys, qpe, kpe):
    if blk.skip_first_layer_pe:
        queries = ref_attention(blk.self_attn, queries, queries, queries)
    else:
        queries = queries + ref_attention(blk.self_attn, queries + qpe, queries + qpe, queries)
    queries = blk.norm1(queries)
    queries = blk.norm2(
        queries + ref_attention(blk.cross_attn_token_to_image, queries + qpe, keys + kpe, keys)
    )
    queries = blk.norm3(queries + blk.mlp.lin2(torch.relu(blk.mlp.lin1(queries))))
    keys = blk.norm4(keys + ref_attention(blk.cross_attn_image_to_token, keys + kpe, queries + qpe, queries))
    return queries, keys


def test_attention_widths_and_formula():
    torch.manual_seed(0)
    attn = Attention(32, heads=4, downsample_rate=2)
    assert attn.q_proj.weight.shape == (16, 32) and attn.out_proj.weight.shape == (32, 16)
    q, k = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(q, k, k), ref_attention(attn, q, k, k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("skip_pe", [True, False])
def test_two_way_block_matches_reference(skip_pe):
    torch.manual_seed(1)
    blk = TwoWayAttentionBlock(32, heads=4, mlp_dim=48, downsample_rate=2, skip_first_layer_pe=skip_pe)
    q, k, qpe, kpe = (
        torch.randn(2, 6, 32),
        torch.randn(2, 20, 32),
        torch.randn(2, 6, 32),
        torch.randn(1, 20, 32),
    )
    out_q, out_k = blk(q, k, qpe, kpe)
    ref_q, ref_k = ref_block(blk, q, k, qpe, kpe)
    torch.testing.assert_close(out_q, ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_k, ref_k, rtol=1e-5, atol=1e-5)


def test_transformer_reference_and_video_permutation_equivariance():
    torch.manual_seed(2)
    tr = TwoWayTransformer(depth=2, dim=32, heads=4, mlp_dim=48, downsample_rate=2)
    assert tr.layers[0].skip_first_layer_pe and not tr.layers[1].skip_first_layer_pe
    video, pe, tokens = torch.randn(3, 24, 32), torch.randn(1, 24, 32), torch.randn(3, 6, 32)
    out_t, out_v = tr(video, pe, tokens)
    q, k = tokens, video
    for blk in tr.layers:
        q, k = ref_block(blk, q, k, tokens, pe)
    q = tr.norm_final_attn(q + ref_attention(tr.final_attn_token_to_image, q + tokens, k + pe, k))
    torch.testing.assert_close(out_t, q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_v, k, rtol=1e-5, atol=1e-5)
    perm = torch.randperm(24)
    p_t, p_v = tr(video[:, perm], pe[:, perm], tokens)
    torch.testing.assert_close(p_t, out_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p_v, out_v[:, perm], rtol=1e-5, atol=1e-5)


def test_video_mask_decoder_shapes_and_hypernetwork():
    torch.manual_seed(3)
    dec = VideoMaskDecoder(64, num_outputs=3, depth=2, heads=4, mlp_dim=96, out_dim_factor=8)
    assert dec.output_upscaling[0].weight.shape == (64, 16, 2, 2, 2)  # min(2*64/8, 64) = 16
    assert dec.output_upscaling[3].weight.shape == (16, 8, 1, 2, 2)  # 64/8 = 8
    grid = (2, 4, 4)
    maps, io, video = dec(torch.randn(5, 32, 64), torch.randn(1, 32, 64), torch.randn(5, 3, 64), grid)
    assert maps.shape == (5, 3, 4, 16, 16) and dec.map_size(grid) == (4, 16, 16)
    assert io.shape == (5, 6, 64) and video.shape == (5, 32, 64)
    # map k = <hypernetwork_k(io token k), upscaled video features>
    up = dec.output_upscaling(video.transpose(1, 2).reshape(5, 64, 2, 4, 4))
    hyper = dec.output_hypernetworks_mlps[1](io[:, 1])
    torch.testing.assert_close(maps[:, 1], (hyper[:, :, None, None, None] * up).sum(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError):
        dec(torch.randn(5, 31, 64), torch.randn(1, 31, 64), torch.randn(5, 3, 64), grid)


def small_tracker(seed: int = 0) -> TrackingDecoder:
    torch.manual_seed(seed)
    tr = TrackingDecoder(64, token_grid=(4, 4, 4), patch=(2, 8, 8), heads=4, mlp_dim=96)
    for m in tr.modules():  # embeddings are zero-free anyway; make them clearly non-trivial
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight)
    return tr.eval()


def test_decode_window_tokens_follow_spec_order():
    tr = small_tracker()
    b, n, length = 2, 3, 64
    video = torch.randn(b, length, 64)
    queries = torch.tensor([[[0.5, 3.5, 20.5], [4.5, 30.5, 1.5], [7.5, 0.5, 0.5]]]).repeat(b, 1, 1)
    labels = torch.tensor([[1, 0, 2], [1, 1, 1]])
    feats = torch.randn(b, n, 64)
    flabels = torch.tensor([[0, 1, 1], [1, 0, 0]])
    seen = {}
    hook = tr.mask_decoder.transformer.register_forward_pre_hook(lambda m, a: seen.setdefault("args", a))
    with torch.no_grad():
        out = tr.decode_window(video, queries, labels, feats, flabels)
    hook.remove()
    assert out.heatmap.shape == (b, n, 8, 16, 16) == (b, n, *tr.map_size)
    assert out.visibility.shape == out.depth.shape == out.heatmap.shape
    assert out.io_tokens.shape == (b, n, 6, 64) and out.video_tokens.shape == (b, n, length, 64)
    vid, pe, tokens = seen["args"]
    tokens = tokens.view(b, n, 6, 64)
    pe_enc = tr.prompt_encoder
    torch.testing.assert_close(
        vid.view(b, n, length, 64),
        (video + tr.processed_video_mask_token.weight)[:, None].expand(-1, n, -1, -1),
    )
    torch.testing.assert_close(pe, pe_enc.get_dense_pe((4, 4, 4)))
    torch.testing.assert_close(tokens[:, :, :3], tr.mask_decoder.mask_tokens.weight.expand(b, n, 3, 64))
    q = pe_enc.pe_layer.encode(queries / torch.tensor([8.0, 32.0, 32.0]))
    torch.testing.assert_close(tokens[0, 0, 3], q[0, 0] + pe_enc.point_embeddings[1].weight[0])
    torch.testing.assert_close(tokens[0, 1, 3], q[0, 1] + pe_enc.point_embeddings[0].weight[0])
    torch.testing.assert_close(tokens[0, 2, 3], q[0, 2])  # re-anchored: no label embedding
    torch.testing.assert_close(tokens[:, :, 4], pe_enc.not_a_point_embed.weight.expand(b, n, 64))
    torch.testing.assert_close(tokens[0, 1, 5], feats[0, 1] + pe_enc.prompt_feature_embeddings[1].weight[0])
    torch.testing.assert_close(tokens[1, 1, 5], feats[1, 1] + pe_enc.prompt_feature_embeddings[0].weight[0])
    assert tr.feature_token_index == 5


def test_decode_window_history_and_query_independence():
    tr = small_tracker(1)
    video = torch.randn(1, 64, 64)
    queries = torch.tensor([[[0.5, 3.5, 20.5], [4.5, 30.5, 1.5]]])
    labels = torch.tensor([[1, 1]])
    with torch.no_grad():
        out = tr.decode_window(video, queries, labels)
        explicit = tr.processed_video_mask_token.weight.expand(1, 2, 64, 64)
        same = tr.decode_window(video, queries, labels, history=explicit)
        single = tr.decode_window(video, queries[:, 1:], labels[:, 1:])
        other = tr.decode_window(video, queries, labels, history=torch.randn(1, 2, 64, 64))
    torch.testing.assert_close(out.heatmap, same.heatmap, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.heatmap[:, 1:], single.heatmap, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.heatmap, other.heatmap, atol=1e-3)
    assert not torch.allclose(out.heatmap[:, 0], out.heatmap[:, 1], atol=1e-3)
    with pytest.raises(InputError, match="history"):
        tr.decode_window(video, queries, labels, history=torch.randn(1, 2, 63, 64))
    with pytest.raises(InputError, match="queries"):
        tr.decode_window(video, queries[..., :2], labels)


def test_memory_helpers():
    tr = small_tracker(2)
    with torch.no_grad():
        tr.processed_video_features_proj.weight.copy_(torch.eye(64))
        tr.processed_video_features_proj.bias.zero_()
        tokens = torch.randn(3, 64, 64)  # grid (4, 4, 4): 16 tokens per time slice
        hist = tr.next_history(tokens)
        torch.testing.assert_close(hist[:, :32], tokens[:, 32:])  # last 2 slices -> slots 0-1
        torch.testing.assert_close(hist[:, 32:], tr.processed_video_mask_token.weight.expand(3, 32, 64))
        torch.testing.assert_close(tr.next_history(tokens, overlap=1)[:, :16], tokens[:, 48:])
        io = torch.randn(2, 5, 6, 64)
        torch.testing.assert_close(tr.next_prompt_features(io), tr.prompt_feature_linear_layer(io[:, :, 5]))
    with pytest.raises(InputError):
        tr.next_history(tokens, overlap=5)


def official_tracking_table() -> dict[str, tuple[int, ...]]:
    """The §5.3 table written out key by key."""
    d, h = 1408, 704
    t: dict[str, tuple[int, ...]] = {
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (3, 704),
        "prompt_encoder.not_a_point_embed.weight": (1, d),
        "prompt_encoder.no_mask_embed.weight": (1, d),
        "mask_decoder.transformer.norm_final_attn.weight": (d,),
        "mask_decoder.transformer.norm_final_attn.bias": (d,),
        "mask_decoder.iou_token.weight": (1, d),
        "mask_decoder.mask_tokens.weight": (3, d),
        "mask_decoder.output_upscaling.0.weight": (d, 352, 2, 2, 2),
        "mask_decoder.output_upscaling.0.bias": (352,),
        "mask_decoder.output_upscaling.1.weight": (352,),
        "mask_decoder.output_upscaling.1.bias": (352,),
        "mask_decoder.output_upscaling.3.weight": (352, 176, 1, 2, 2),
        "mask_decoder.output_upscaling.3.bias": (176,),
        "prompt_feature_linear_layer.weight": (d, d),
        "prompt_feature_linear_layer.bias": (d,),
        "processed_video_mask_token.weight": (1, d),
        "processed_video_features_proj.weight": (d, d),
        "processed_video_features_proj.bias": (d,),
    }
    for i in (0, 1):
        t[f"prompt_encoder.point_embeddings.{i}.weight"] = (1, d)
        t[f"prompt_encoder.prompt_feature_embeddings.{i}.weight"] = (1, d)
    attn = {f"layers.{i}.self_attn": d for i in (0, 1)}
    attn |= {f"layers.{i}.cross_attn_{k}": h for i in (0, 1) for k in ("token_to_image", "image_to_token")}
    attn["final_attn_token_to_image"] = h
    for name, inner in attn.items():
        p = f"mask_decoder.transformer.{name}."
        for proj in "qkv":
            t[p + f"{proj}_proj.weight"], t[p + f"{proj}_proj.bias"] = (inner, d), (inner,)
        t[p + "out_proj.weight"], t[p + "out_proj.bias"] = (d, inner), (d,)
    for i in (0, 1):
        p = f"mask_decoder.transformer.layers.{i}."
        for k in range(1, 5):
            t[p + f"norm{k}.weight"] = t[p + f"norm{k}.bias"] = (d,)
        t[p + "mlp.lin1.weight"], t[p + "mlp.lin1.bias"] = (2048, d), (2048,)
        t[p + "mlp.lin2.weight"], t[p + "mlp.lin2.bias"] = (d, 2048), (d,)
    for i in range(3):
        p = f"mask_decoder.output_hypernetworks_mlps.{i}.layers."
        t[p + "0.weight"], t[p + "0.bias"] = (d, d), (d,)
        t[p + "1.weight"], t[p + "1.bias"] = (d, d), (d,)
        t[p + "2.weight"], t[p + "2.bias"] = (176, d), (176,)
    return t


def test_official_tracking_decoder_keys_shapes_count_and_meta_forward():
    with torch.device("meta"):
        tr = TrackingDecoder(1408, token_grid=(8, 16, 16), patch=(2, 14, 14))
        sd = l4p_tracking_head_to_official(tr.state_dict())
        assert len(sd) == 120
        assert {k: tuple(v.shape) for k, v in sd.items()} == official_tracking_table()
        # The spec's 68,124,192 counts parameters; the (3, 704) Fourier buffer comes on top.
        assert sum(p.numel() for p in tr.parameters()) == 68_124_192
        assert tr.map_size == (16, 64, 64)
        assert tr.prompt_encoder.input_size == (16, 224, 224)
        out = tr.decode_window(
            torch.empty(1, 2048, 1408), torch.empty(1, 2, 3), torch.zeros(1, 2, dtype=torch.long)
        )
    assert out.heatmap.shape == (1, 2, 16, 64, 64)
    assert out.io_tokens.shape == (1, 2, 6, 1408) and out.video_tokens.shape == (1, 2, 2048, 1408)


def test_layernorm3d_matches_channel_layer_norm():
    from l4p_framework.blocks import LayerNorm3d

    ln = LayerNorm3d(6)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 6, 3, 4, 5)
    ref = F.layer_norm(x.movedim(1, -1), (6,), ln.weight, ln.bias, eps=1e-6).movedim(-1, 1)
    torch.testing.assert_close(ln(x), ref, rtol=1e-5, atol=1e-5)


def test_decode_window_gradient_reaches_exactly_the_used_parameters():
    tr = small_tracker(4).train()
    out = tr.decode_window(
        torch.randn(1, 64, 64), torch.tensor([[[1.5, 5.5, 9.5]]]), torch.tensor([[1]]), torch.randn(1, 1, 64)
    )
    (out.heatmap.mean() + out.visibility.mean() + out.depth.mean() + out.io_tokens.mean()).backward()
    unused = {n for n, p in tr.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # point label 1 and feature label 0 only; memory projections are used by the helpers only.
    assert unused == {
        "prompt_encoder.point_embeddings.0.weight",
        "mask_decoder.iou_token.weight",
        "prompt_encoder.no_mask_embed.weight",
        "prompt_encoder.prompt_feature_embeddings.1.weight",
        "prompt_feature_linear_layer.weight",
        "prompt_feature_linear_layer.bias",
        "processed_video_features_proj.weight",
        "processed_video_features_proj.bias",
    }
