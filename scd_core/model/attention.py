"""Query-based cross-attention layers (the paper's AF, Eq. 9) and their variants.

All layers are batch-first. Common constructor signature (every variant, ``scd_core.model.attention_variants`` too)::

    Layer(hidden_dim: int, *, num_heads: int, dropout: float = 0.0, **layer_specific)

Common forward signature::

    layer(query [B, Lq, H], key [B, Lk, H], value [B, Lk, H],
          key_padding_mask [B, Lk] bool | None) -> [B, Lq, H]

``key_padding_mask`` follows PyTorch's convention: **True = ignore this key** (a missing
modality). Every row must keep at least one key. ``query_padding_mask`` (same
convention, ``[B, Lq]``) may be passed as a keyword; layers that mix query positions
(``mta``) need it so that a padded query cannot leak into the others, the rest ignore it.
In MCDM queries and keys are the same modality nodes, so both masks are ``~modality_mask``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scd_core.model.registries import ATTENTION_LAYERS

__all__ = ["AttentionLayer", "ResidualSum", "MultiHeadAttention", "MultiTokenAttention"]


class AttentionLayer(nn.Module):
    """Base class: ``(query, key, value, key_padding_mask) -> [B, Lq, H]``."""

    def reset_parameters(self) -> None:  # pragma: no cover - overridden
        pass

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        *,
        query_padding_mask: Tensor | None = None,
    ) -> Tensor:
        raise NotImplementedError


@ATTENTION_LAYERS.register("none")
class ResidualSum(AttentionLayer):
    """No attention: ``query + value`` node by node (the "w/o attention layers" ablation).

    Parameter-free stand-in chosen so that both inputs still reach the output (the paper
    does not say what replaces AF): with task projectors the task query
    ``C_preds_t`` and the shared ``C_mods`` are summed per modality node; without them
    the query *is* ``C_mods``. Needs ``Lq == Lk`` (same nodes). Padded keys contribute 0.

    Shapes: query, value ``[B, N, H]`` -> ``[B, N, H]``.
    """

    def __init__(self, hidden_dim: int, *, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        if query.shape != value.shape:
            raise ValueError(f"'none' attention sums query and value node by node; shapes {tuple(query.shape)} and {tuple(value.shape)} differ")
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        return query + value


@ATTENTION_LAYERS.register("mha")
class MultiHeadAttention(AttentionLayer):
    """Multi-head attention (Vaswani et al. 2017): ``torch.nn.MultiheadAttention``, batch-first.

    Parameters: ``4 * (H*H + H)``. ``dropout`` applies to the attention weights.

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``
    (True = ignore) -> ``[B, Lq, H]``.
    """

    def __init__(self, hidden_dim: int, *, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)

    def reset_parameters(self) -> None:
        self.attn._reset_parameters()

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        out, _ = self.attn(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)
        return out


@ATTENTION_LAYERS.register("mta")
class MultiTokenAttention(AttentionLayer):
    """Multi-token attention (Golovneva et al. 2025), non-causal cross-attention form.

    Per head ``h`` (following the authors' ``mta_transformer.py``):

    1. scores ``S = Q K^T / sqrt(d)`` ``[B, heads, Lq, Lk]``;
    2. key-query convolution before the softmax: a depthwise ``kernel_size`` conv over
       ``(Lq, Lk)``; padded queries/keys are zeroed first so they do not leak;
    3. head mixing before the softmax (``heads x heads`` linear, their
       ``pre_sm_linear_head``); padded keys -> ``-inf``; softmax over keys;
    4. the same two steps after the softmax (key-query conv, head mixing), padded
       entries zeroed again; attention dropout; ``A V``;
    5. group norm per head (RMSNorm over ``head_dim``, their ``group_norm``) and a scalar
       sigmoid gate per head and position (their ``add_gating`` with ``gate_1d``);
    6. concatenation of the heads and the output projection.

    Differences from the language-model original: the convolutions are centred
    (``pad_key="both"`` and symmetric query padding) because modality nodes have no causal
    order; kernels are odd-sized, default 3x3 for N <= 5 nodes. Kernels and head mixers
    start at the identity, as theirs (``init_method="identity"``), so at initialisation the
    layer is MHA followed by the norm and gate. Projections have biases and Xavier
    initialisation like ``nn.MultiheadAttention``.

    Parameters: ``4 * (H*H + H)`` + ``2 * heads * kq`` (kernels) + ``2 * heads^2``
    (head mixing) + ``head_dim`` (norm) + ``head_dim + 1`` (gate).

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``,
    query_padding_mask ``[B, Lq]`` (True = ignore) -> ``[B, Lq, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int,
        dropout: float = 0.0,
        kernel_size: tuple[int, int] = (3, 3),
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"MTA kernel sizes must be odd (centred convolution), got {kernel_size}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.kernel_size = tuple(kernel_size)
        self.dropout = dropout
        self.eps = eps
        self.q_proj = nn.Linear(hidden_dim, hidden_dim)
        self.k_proj = nn.Linear(hidden_dim, hidden_dim)
        self.v_proj = nn.Linear(hidden_dim, hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)
        self.kq_kernel_pre = nn.Parameter(torch.empty(num_heads, 1, *self.kernel_size))
        self.kq_kernel_post = nn.Parameter(torch.empty(num_heads, 1, *self.kernel_size))
        self.head_mix_pre = nn.Parameter(torch.empty(num_heads, num_heads))
        self.head_mix_post = nn.Parameter(torch.empty(num_heads, num_heads))
        self.norm_weight = nn.Parameter(torch.empty(self.head_dim))
        self.gate = nn.Linear(self.head_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        cq, ck = self.kernel_size
        with torch.no_grad():
            for kernel in (self.kq_kernel_pre, self.kq_kernel_post):
                kernel.zero_()
                kernel[:, 0, cq // 2, ck // 2] = 1.0
            for mix in (self.head_mix_pre, self.head_mix_post):
                mix.copy_(torch.eye(self.num_heads))
        nn.init.ones_(self.norm_weight)
        std = self.hidden_dim ** -0.5
        nn.init.trunc_normal_(self.gate.weight, std=std, a=-3 * std, b=3 * std)
        nn.init.zeros_(self.gate.bias)

    def _kq_conv(self, scores: Tensor, kernel: Tensor) -> Tensor:
        cq, ck = self.kernel_size
        padded = F.pad(scores, (ck // 2, ck // 2, cq // 2, cq // 2))
        return F.conv2d(padded, kernel, groups=self.num_heads)

    @staticmethod
    def _mix_heads(scores: Tensor, mix: Tensor) -> Tensor:
        # scores [B, heads, Lq, Lk]; out[:, g] = sum_h mix[g, h] * scores[:, h]
        return torch.einsum("gh,bhqk->bgqk", mix, scores)

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        b, lq, _ = query.shape
        lk = key.size(1)
        heads, d = self.num_heads, self.head_dim
        q = self.q_proj(query).view(b, lq, heads, d).transpose(1, 2)  # [B, h, Lq, d]
        k = self.k_proj(key).view(b, lk, heads, d).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, heads, d).transpose(1, 2)

        # invalid[b, 1, i, j]: padded query i or padded key j
        invalid = torch.zeros(b, 1, lq, lk, dtype=torch.bool, device=query.device)
        if key_padding_mask is not None:
            invalid = invalid | key_padding_mask[:, None, None, :]
        if query_padding_mask is not None:
            invalid = invalid | query_padding_mask[:, None, :, None]

        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(invalid, 0.0)
        scores = self._kq_conv(scores, self.kq_kernel_pre)
        scores = self._mix_heads(scores, self.head_mix_pre)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(scores, dim=-1)

        attn = attn.masked_fill(invalid, 0.0)
        attn = self._kq_conv(attn, self.kq_kernel_post)
        attn = self._mix_heads(attn, self.head_mix_post)
        attn = attn.masked_fill(invalid, 0.0)
        attn = F.dropout(attn, self.dropout, self.training)

        out = attn @ v  # [B, h, Lq, d]
        out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm_weight
        out = out * torch.sigmoid(self.gate(out))
        out = out.transpose(1, 2).reshape(b, lq, heads * d)
        return self.out_proj(out)
