"""Random-Fourier 3D positional encoding and point / feature prompt encoding."""

from __future__ import annotations

import math

import pytest
import torch

from l4p_framework.blocks import PromptEncoder3D, RandomFourierPE3D
from l4p_framework.errors import InputError


def test_gaussian_matrix_is_a_persistent_seeded_buffer():
    pe = RandomFourierPE3D(16, seed=3)
    g = pe.positional_encoding_gaussian_matrix
    assert g.shape == (3, 16)
    assert "positional_encoding_gaussian_matrix" in pe.state_dict()
    assert not any(True for _ in pe.parameters())
    torch.testing.assert_close(g, torch.randn(3, 16, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(RandomFourierPE3D(16, seed=3).positional_encoding_gaussian_matrix, g)
    other = RandomFourierPE3D(16, seed=4)
    assert not torch.equal(other.positional_encoding_gaussian_matrix, g)
    other.load_state_dict(pe.state_dict())  # loaded, never regenerated
    assert torch.equal(other.positional_encoding_gaussian_matrix, g)


def test_encode_formula():
    pe = RandomFourierPE3D(8, seed=0)
    g = pe.positional_encoding_gaussian_matrix
    c = torch.rand(5, 3)
    out = pe.encode(c)
    assert out.shape == (5, 16)
    ref = torch.zeros(5, 16)
    for n in range(5):
        for j in range(8):
            a = 2 * math.pi * sum((2 * c[n, i].item() - 1) * g[i, j].item() for i in range(3))
            ref[n, j], ref[n, 8 + j] = math.sin(a), math.cos(a)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_dense_pe_grid_centres_order_t_x_y_and_token_order():
    pe = RandomFourierPE3D(4, seed=1)
    t, h, w = 2, 3, 5
    dense = pe.dense_pe((t, h, w))
    assert dense.shape == (1, 8, t, h, w)
    i, j, k = 1, 2, 3  # time, row, column
    expected = pe.encode(torch.tensor([(i + 0.5) / t, (k + 0.5) / w, (j + 0.5) / h]))
    torch.testing.assert_close(dense[0, :, i, j, k], expected)
    tokens = pe.dense_pe_tokens((t, h, w))
    assert tokens.shape == (1, t * h * w, 8)
    torch.testing.assert_close(tokens[0, i * h * w + j * w + k], expected)


def test_point_embedding_normalisation_labels_and_padding():
    torch.manual_seed(0)
    enc = PromptEncoder3D(16, input_size=(16, 224, 112))
    for e in [*enc.point_embeddings, enc.not_a_point_embed]:
        torch.nn.init.normal_(e.weight)
    pts = torch.tensor([[[8.5, 100.5, 50.5]], [[1.5, 10.5, 200.5]], [[3.5, 3.5, 3.5]]])
    labels = torch.tensor([[0], [1], [2]])
    out = enc.embed_points(pts, labels, pad=True)
    assert out.shape == (3, 2, 16)
    pe = enc.pe_layer.encode(pts[:, 0] / torch.tensor([16.0, 112.0, 224.0]))  # (t/T, x/W, y/H)
    torch.testing.assert_close(out[0, 0], pe[0] + enc.point_embeddings[0].weight[0])
    torch.testing.assert_close(out[1, 0], pe[1] + enc.point_embeddings[1].weight[0])
    torch.testing.assert_close(out[2, 0], pe[2])  # label 2: positional encoding only
    for n in range(3):  # padding point: zero PE + not_a_point_embed
        torch.testing.assert_close(out[n, 1], enc.not_a_point_embed.weight[0])
    assert enc.embed_points(pts, labels, pad=False).shape == (3, 1, 16)


def test_feature_embedding():
    enc = PromptEncoder3D(8, input_size=(4, 8, 8))
    for e in enc.prompt_feature_embeddings:
        torch.nn.init.normal_(e.weight)
    feats = torch.randn(3, 8)
    labels = torch.tensor([0, 1, 1])
    out = enc.embed_features(feats, labels)
    assert out.shape == (3, 1, 8)
    torch.testing.assert_close(out[1, 0], feats[1] + enc.prompt_feature_embeddings[1].weight[0])
    torch.testing.assert_close(
        enc.embed_features(None, labels)[0, 0], enc.prompt_feature_embeddings[0].weight[0]
    )
    with pytest.raises(InputError, match="labels"):
        enc.embed_features(feats, torch.tensor([0, 2, 1]))
    with pytest.raises(InputError):
        enc.embed_points(torch.zeros(3, 1, 2), torch.zeros(3, 1, dtype=torch.long))
