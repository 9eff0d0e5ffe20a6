"""Attention variants of Table 13: CrossMPT, BiCA, FA (issue 8)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from layer_checks import assert_reset_is_deterministic

from scd_core.config import ModelConfig, load_config
from scd_core.model import ATTENTION_LAYERS, MCDM, count_parameters
from scd_core.model.attention_variants import (
    BiCrossAttention,
    CrossMPTAttention,
    ForgettingAttention,
)
from scd_core.tasks import TASK_NAMES

VARIANTS = ["crossmpt", "bica", "fa"]
H, HEADS = 16, 4
SMALL_DIMS = {"video": 12, "audio": 10, "text": 8, "behavior": 6}


def make(name: str, **kw):
    torch.manual_seed(0)
    return ATTENTION_LAYERS.get(name)(H, num_heads=HEADS, dropout=0.1, **kw).eval()


def inputs(b: int = 3, lq: int = 4, lk: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, lq, H, generator=g)
    k = torch.randn(b, lk, H, generator=g)
    key_pad = torch.zeros(b, lk, dtype=torch.bool)
    key_pad[1, [0, 3]] = True
    key_pad[2, 1:] = True  # only key 0 left
    query_pad = torch.zeros(b, lq, dtype=torch.bool)
    query_pad[1, 2] = True
    query_pad[2, 0] = True
    return q, k, key_pad, query_pad


# ------------------------------------------------------------------ registry and config


@pytest.mark.parametrize("name", VARIANTS)
def test_registered_and_accepted_by_the_config(name):
    assert name in ATTENTION_LAYERS
    assert ModelConfig(attention=name).attention == name
    assert load_config(None, [f"model.attention={name}"]).model.attention == name


# ------------------------------------------------------------------ common behaviour


@pytest.mark.parametrize("name", VARIANTS)
def test_output_shape(name):
    layer = make(name)
    q, k, key_pad, query_pad = inputs(lq=3, lk=5)
    out = layer(q, k, k, key_pad, query_padding_mask=query_pad)
    assert out.shape == (3, 3, H) and torch.isfinite(out).all()
    assert layer(q, k, k).shape == (3, 3, H)  # masks are optional


@pytest.mark.parametrize("name", VARIANTS)
def test_masked_nodes_change_no_present_output(name):
    layer = make(name)
    q, k, key_pad, query_pad = inputs()
    base = layer(q, k, k, key_pad, query_padding_mask=query_pad)
    g = torch.Generator().manual_seed(1)
    k2 = k.clone()
    k2[key_pad] = torch.randn(int(key_pad.sum()), H, generator=g) * 100
    q2 = q.clone()
    q2[query_pad] = torch.randn(int(query_pad.sum()), H, generator=g) * 100
    out = layer(q2, k2, k2, key_pad, query_padding_mask=query_pad)
    present = ~query_pad
    torch.testing.assert_close(out[present], base[present], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mha"] + VARIANTS)
def test_query_with_every_key_masked_is_finite(name):
    # nn.MultiheadAttention gives such a query zero attention weights; the variants match
    layer = ATTENTION_LAYERS.get(name)(H, num_heads=HEADS).train()
    q, k, _, _ = inputs()
    q.requires_grad_()
    key_pad = torch.zeros(3, 5, dtype=torch.bool)
    key_pad[0] = True
    out = layer(q, k, k, key_pad, query_padding_mask=torch.zeros(3, 4, dtype=torch.bool))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", VARIANTS)
def test_reset_parameters_is_deterministic(name):
    assert_reset_is_deterministic(make(name), seed=3)


# ------------------------------------------------------------------ CrossMPT


def _reference_crossmpt(layer: CrossMPTAttention, q, k, parity_check):
    """The authors' ``Encoder.forward`` literally: the same ``EncoderLayer`` in both
    directions, masks from the parity-check matrix (``-1e9``), a middle norm after layer
    ``N // 2`` and the final norm; the last key update is computed (and not used)."""

    def mha(attn, x, y, mask):  # their MultiHeadedAttention.attention (eval: no dropout)
        h, d = attn.num_heads, attn.head_dim
        def split(t):
            return t.view(t.size(0), -1, h, d).transpose(1, 2)

        qs, ks, vs = split(attn.q_proj(x)), split(attn.k_proj(y)), split(attn.v_proj(y))
        scores = (qs @ ks.transpose(-2, -1) / math.sqrt(d)).masked_fill(mask, -1e9)
        out = (scores.softmax(-1) @ vs).transpose(1, 2).reshape(x.shape)
        return attn.out_proj(out)

    def sublayers(lay, x, y, mask):
        x = x + mha(lay.attn, lay.norm_attn(x), y, mask)
        return x + lay.ffn(lay.norm_ffn(x))

    # parity_check [B, Lk, Lq] (a check node per key, a variable node per query)
    mask_vn = ~(parity_check.transpose(1, 2) > 0)[:, None]  # [B, 1, Lq, Lk]: queries read keys
    mask_cn = ~(parity_check > 0)[:, None]  # [B, 1, Lk, Lq]: keys read queries
    x, x2 = q, k
    n = len(layer.layers)
    for idx, lay in enumerate(layer.layers, start=1):
        x = sublayers(lay, x, x2, mask_vn)
        x2 = sublayers(lay, x2, x, mask_cn)
        if idx == n // 2 and n > 1:
            x, x2 = layer.mid_norm(x), layer.mid_norm(x2)
    return layer.final_norm(x)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_crossmpt_equals_the_authors_encoder_with_a_parity_check_mask(num_layers):
    layer = make("crossmpt", num_layers=num_layers)
    with torch.no_grad():  # non-trivial norms and biases
        for p in layer.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    q, k, key_pad, query_pad = inputs()
    # MCDM's modality graph is complete over the present nodes: the "parity-check matrix"
    # connects every present key to every present query
    parity = (~key_pad)[:, :, None] & (~query_pad)[:, None, :]
    ref = _reference_crossmpt(layer, q, k, parity)
    out = layer(q, k, k, key_pad, query_padding_mask=query_pad)
    present = ~query_pad  # a padded query has no parity-check edge; its row is unused
    torch.testing.assert_close(out[present], ref[present], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["crossmpt", "bica"])
def test_keys_updated_from_the_queries_reach_the_output(name):
    # Both directions: the key nodes read the queries, and the queries read those updated
    # keys, so masking one query changes the others' outputs; with one layer it cannot.
    q, k, _, _ = inputs()
    pad = torch.zeros(3, 4, dtype=torch.bool)
    pad[:, 3] = True
    for num_layers, changes in ((2, True), (1, False)):
        layer = make(name, num_layers=num_layers)
        a = layer(q, k, k, None, query_padding_mask=None)[:, :3]
        b = layer(q, k, k, None, query_padding_mask=pad)[:, :3]
        assert (not torch.allclose(a, b, atol=1e-6)) == changes, num_layers


def test_crossmpt_shares_layer_weights_between_directions():
    one = make("crossmpt", num_layers=1)
    two = make("crossmpt", num_layers=2)
    per_layer = count_parameters(one) - 2 * H  # less the final norm
    assert count_parameters(two) == 2 * per_layer + 2 * H + 2 * H  # + middle and final norm


# ------------------------------------------------------------------ BiCA


def test_bica_both_directions_use_one_logit_matrix():
    layer = make("bica")
    q, k, key_pad, query_pad = inputs()
    attn_q, attn_k = layer.attention_maps(q, k, key_pad, query_padding_mask=query_pad)
    assert attn_q.shape == (3, HEADS, 4, 5) and attn_k.shape == (3, HEADS, 5, 4)
    # each direction is a distribution over the other set, masked entries exactly 0
    torch.testing.assert_close(attn_q.sum(-1), torch.ones(3, HEADS, 4))
    torch.testing.assert_close(attn_k.sum(-1), torch.ones(3, HEADS, 5))
    assert (attn_q.masked_select(key_pad[:, None, None, :].expand_as(attn_q)) == 0).all()
    assert (attn_k.masked_select(query_pad[:, None, None, :].expand_as(attn_k)) == 0).all()

    # softmax over rows and over columns of the same R: log A_q - log A_k^T = c_j - r_i,
    # so the double-centred difference vanishes (on the entries both directions keep)
    b = 0  # unmasked sample
    diff = attn_q[b].log() - attn_k[b].transpose(-1, -2).log()  # [h, Lq, Lk]
    centred = diff - diff.mean(-1, keepdim=True) - diff.mean(-2, keepdim=True) + diff.mean((-1, -2), keepdim=True)
    torch.testing.assert_close(centred, torch.zeros_like(centred), atol=1e-5, rtol=0)

    # and R is the product of the two sets' single "rv" projections
    blk = layer.layers[0]
    r_q = blk.rv_q(blk.norm_q(q[b])).chunk(2, -1)[0].view(4, HEADS, -1).transpose(0, 1)
    r_k = blk.rv_k(blk.norm_k(k[b])).chunk(2, -1)[0].view(5, HEADS, -1).transpose(0, 1)
    logits = r_q @ r_k.transpose(-1, -2) / math.sqrt(H // HEADS)
    torch.testing.assert_close(attn_q[b], logits.softmax(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attn_k[b], logits.softmax(-2).transpose(-1, -2), atol=1e-6, rtol=1e-5)


def test_bica_has_no_separate_query_and_key_projections():
    layer = make("bica")
    first, last = layer.layers
    # one in-projection per set for both the similarity and the values
    assert first.rv_q.out_features == 2 * H and first.rv_k.out_features == 2 * H
    assert last.rv_q.out_features == H and last.out_k is None  # BiXT's one-sided last block
    assert isinstance(layer, BiCrossAttention)


# ------------------------------------------------------------------ FA


def _mha_with_same_projections(fa: ForgettingAttention) -> torch.nn.MultiheadAttention:
    mha = torch.nn.MultiheadAttention(H, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([fa.q_proj.weight, fa.k_proj.weight, fa.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([fa.q_proj.bias, fa.k_proj.bias, fa.v_proj.bias]))
        mha.out_proj.weight.copy_(fa.out_proj.weight)
        mha.out_proj.bias.copy_(fa.out_proj.bias)
    return mha


def test_fa_with_forget_gates_at_one_is_softmax_attention():
    fa = make("fa")
    with torch.no_grad():
        for lin in (fa.q_proj, fa.k_proj, fa.v_proj, fa.out_proj):
            lin.bias.normal_()
        fa.fgate_proj.bias.fill_(1e4)  # f = sigmoid(1e4) = 1 exactly: log f = 0, D = 0
    q, k, key_pad, _ = inputs()
    v = torch.randn_like(k)
    assert (fa.forget_bias(k, key_pad) == 0).all()
    mha = _mha_with_same_projections(fa)
    ref, _ = mha(q, k, v, key_padding_mask=key_pad, need_weights=False)
    torch.testing.assert_close(fa(q, k, v, key_pad), ref, atol=1e-5, rtol=1e-5)
    # the same with torch's fused kernel (bool mask: True = attend)
    def split(t):
        return t.view(3, -1, HEADS, H // HEADS).transpose(1, 2)

    o = F.scaled_dot_product_attention(
        split(fa.q_proj(q)), split(fa.k_proj(k)), split(fa.v_proj(v)), attn_mask=~key_pad[:, None, None, :]
    )
    torch.testing.assert_close(fa(q, k, v, key_pad), fa.out_proj(o.transpose(1, 2).reshape(3, 4, H)),
                               atol=1e-5, rtol=1e-5)
    # with the default (trained-like) gates it differs
    fresh = make("fa")
    assert not torch.allclose(fresh(q, k, v, key_pad), _mha_with_same_projections(fresh)(q, k, v, key_padding_mask=key_pad)[0])


def test_fa_bias_is_the_cumulative_log_forget_gate_of_later_keys():
    fa = make("fa")
    with torch.no_grad():
        fa.fgate_proj.weight.normal_()
        fa.fgate_proj.bias.normal_()
    _, k, key_pad, _ = inputs()
    log_f = F.logsigmoid(fa.fgate_proj(k)).transpose(1, 2)  # [B, h, Lk]
    log_f = log_f.masked_fill(key_pad[:, None, :], 0.0)  # a missing key neither decays nor is used
    lk = k.size(1)
    expected = torch.stack([log_f[..., j + 1:].sum(-1) for j in range(lk)], dim=-1)  # D_j, j = 0..Lk-1
    torch.testing.assert_close(fa.forget_bias(k, key_pad), expected, atol=1e-6, rtol=1e-6)
    assert (fa.forget_bias(k)[..., -1] == 0).all()  # the last key is never decayed


def test_fa_decays_earlier_keys_geometrically():
    fa = make("fa")
    with torch.no_grad():
        fa.fgate_proj.weight.zero_()
        fa.fgate_proj.bias.fill_(math.log(0.4 / 0.6))  # f = sigmoid(logit 0.4) = 0.4 everywhere
        fa.v_proj.weight.copy_(torch.eye(H))
        fa.out_proj.weight.copy_(torch.eye(H))
    q = torch.randn(1, 1, H)
    k = torch.randn(1, 1, H).expand(1, 4, H)  # identical keys: equal q.k, only D differs
    v = torch.eye(4, H)[None]  # value j is the unit vector e_j
    out = fa(q, k, v)[0, 0, :4]
    weights = torch.tensor([0.4**3, 0.4**2, 0.4, 1.0])
    torch.testing.assert_close(out, weights / weights.sum(), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ inside MCDM


@pytest.mark.parametrize("name", VARIANTS)
def test_mcdm_builds_from_the_config_and_trains(name):
    cfg = load_config(None, [f"model.attention={name}", "model.hidden_dim=16", "model.out_features=8",
                             "model.num_heads=4"])
    torch.manual_seed(0)
    model = MCDM.from_config(cfg.model, SMALL_DIMS, cfg.data.tasks).train()
    assert model.attention_name == name
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(6, d, generator=g) for m, d in SMALL_DIMS.items()}
    mask = torch.rand(6, 4, generator=g) > 0.35
    mask[:, 0] |= ~mask.any(1)
    out = model(feats, mask)
    assert set(out) == set(cfg.data.tasks)
    sum(o.sum() for o in out.values()).backward()
    for pname, p in model.named_parameters():  # no dead parameters, no NaN
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname

    # a missing modality's features change no prediction
    model.eval()
    base = model(feats, mask)
    altered = {m: torch.where(mask[:, i, None], x, torch.randn_like(x) * 100) for i, (m, x) in enumerate(feats.items())}
    for t in TASK_NAMES:
        torch.testing.assert_close(model(altered, mask)[t], base[t], atol=1e-5, rtol=1e-5)
