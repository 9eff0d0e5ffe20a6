"""Attention variants of Table 13 (paper appendix A.6): CrossMPT, BiCA and FA.

Each layer keeps the common API of :mod:`scd_core.model.attention`::

    Layer(hidden_dim: int, *, num_heads: int, dropout: float = 0.0, **layer_specific)
    layer(query [B, Lq, H], key [B, Lk, H], value [B, Lk, H],
          key_padding_mask [B, Lk] bool | None, *, query_padding_mask [B, Lq] | None) -> [B, Lq, H]

Masks follow PyTorch's convention (**True = ignore**). A masked key gets exactly zero
attention weight, so its features cannot reach any output. A query whose keys are all
masked gets zero attention weights (no NaN), like ``nn.MultiheadAttention`` in the
PyTorch used here; MCDM never produces such a row (every sample keeps one modality).

Equation numbers of the source papers could not be checked here, so the docstrings give
the formulas themselves and the authors' code files they were checked against.
The three source papers are not cross-attention layers over a handful of nodes; each
class docstring says how it was adapted to MCDM's query-based cross-attention
(queries = the refined task embeddings ``C_preds_t``, keys/values = the shared graph
output ``C_mods``, both over the same ``N <= 5`` modality nodes in modality order).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scd_core.model.attention import AttentionLayer
from scd_core.model.registries import ATTENTION_LAYERS

__all__ = ["BiCrossAttention", "CrossMPTAttention", "ForgettingAttention"]


# ------------------------------------------------------------------ helpers


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, L, heads*d] -> [B, heads, L, d]``."""
    b, length, width = x.shape
    return x.view(b, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, L, d] -> [B, L, heads*d]``."""
    b, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, heads * d)


def _masked_softmax(scores: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Softmax along ``dim`` with ``mask`` (True = ignore) entries at exactly zero weight.

    A slice whose entries are all masked gets all-zero weights instead of NaN (the
    behaviour of ``nn.MultiheadAttention``): its logits are replaced by zeros before the
    softmax, so neither the forward nor the backward pass ever sees ``-inf - -inf``.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    mask = mask.expand_as(scores)
    empty = mask.all(dim=dim, keepdim=True)
    scores = scores.masked_fill(mask, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(scores, dim=dim).masked_fill(mask, 0.0)


def _check_heads(hidden_dim: int, num_heads: int) -> None:
    if hidden_dim % num_heads:
        raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")


def _xavier_zero_(linear: nn.Linear) -> None:
    # Same scheme as nn.MultiheadAttention._reset_parameters and the CrossMPT code.
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class _FeedForward(nn.Module):
    """Position-wise FFN ``W2 Dropout(GELU(W1 x))`` (CrossMPT's ``PositionwiseFeedForward``,
    also BiXT's ``Mlp``). Shapes ``[..., H] -> [..., H]``; ``2*H*r*H + r*H + H`` parameters."""

    def __init__(self, hidden_dim: int, ratio: float, dropout: float) -> None:
        super().__init__()
        inner = max(1, round(hidden_dim * ratio))
        self.w1 = nn.Linear(hidden_dim, inner)
        self.w2 = nn.Linear(inner, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        _xavier_zero_(self.w1)
        _xavier_zero_(self.w2)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(F.gelu(self.w1(x))))


class _MaskedCrossAttention(nn.Module):
    """Multi-head cross-attention with 4 biased projections (CrossMPT's ``MultiHeadedAttention``):
    ``Out(softmax(Q K^T / sqrt(d), masked) V)``; ``dropout`` on the attention weights.

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``
    -> ``[B, Lq, H]``. Parameters ``4 * (H*H + H)``, as ``nn.MultiheadAttention``.
    """

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_dim, hidden_dim)
        self.k_proj = nn.Linear(hidden_dim, hidden_dim)
        self.v_proj = nn.Linear(hidden_dim, hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            _xavier_zero_(lin)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None,
                score_bias: Tensor | None = None) -> Tensor:
        """``score_bias`` (broadcast to ``[B, h, Lq, Lk]``) is added to the scaled scores before
        the softmax (Forgetting Attention's decay)."""
        q = _split_heads(self.q_proj(query), self.num_heads)  # [B, h, Lq, d]
        k = _split_heads(self.k_proj(key), self.num_heads)  # [B, h, Lk, d]
        v = _split_heads(self.v_proj(value), self.num_heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, h, Lq, Lk]
        if score_bias is not None:
            scores = scores + score_bias
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        attn = F.dropout(_masked_softmax(scores, mask, dim=-1), self.dropout, self.training)
        return self.out_proj(_merge_heads(attn @ v))


# ------------------------------------------------------------------ CrossMPT


class _CrossMPTLayer(nn.Module):
    """One CrossMPT decoder layer (their ``EncoderLayer``): pre-norm residual masked
    cross-attention, then a pre-norm residual FFN. ``x <- x + Drop(MHA(LN(x), y, y))``,
    ``x <- x + Drop(FFN(LN(x)))``; the context ``y`` is not normalised (as in their code)."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float, ffn_ratio: float) -> None:
        super().__init__()
        self.attn = _MaskedCrossAttention(hidden_dim, num_heads, dropout)
        self.norm_attn = nn.LayerNorm(hidden_dim)
        self.ffn = _FeedForward(hidden_dim, ffn_ratio, dropout) if ffn_ratio > 0 else None
        self.norm_ffn = nn.LayerNorm(hidden_dim) if ffn_ratio > 0 else None
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.attn.reset_parameters()
        self.norm_attn.reset_parameters()
        if self.ffn is not None:
            self.ffn.reset_parameters()
            self.norm_ffn.reset_parameters()

    def forward(self, x: Tensor, context: Tensor, context_padding_mask: Tensor | None) -> Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), context, context, context_padding_mask))
        if self.ffn is not None:
            x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return x


@ATTENTION_LAYERS.register("crossmpt")
class CrossMPTAttention(AttentionLayer):
    """Cross-attention message-passing transformer (Park et al. 2025, ICLR; arXiv:2405.01033).

    CrossMPT decodes error-correcting codes with two node sets, the magnitude embeddings
    (variable nodes, VN) and the syndrome embeddings (check nodes, CN). Each of its ``N``
    decoder layers applies two masked cross-attention blocks (paper Fig. 3;
    authors' ``Model_CrossMPT.py``, ``Encoder.forward``)::

        M <- Layer_l(M, S, mask from H^T)   # magnitude queries read syndrome keys/values
        S <- Layer_l(S, M, mask from H)     # syndrome queries read the *updated* magnitudes

    where ``Layer_l(x, y) = x + Drop(MHA(LN(x), y, y))`` then ``x + Drop(FFN(LN(x)))``
    (pre-norm residual blocks, FFN ``d -> 4d -> d`` with GELU), the two blocks of a layer
    share ``Layer_l``'s weights (the authors apply the same ``EncoderLayer`` object in both
    directions), a ``LayerNorm`` is applied to both sets after layer ``N // 2`` when
    ``N > 1``, and a final ``LayerNorm`` closes the stack. The mask lets VN ``i`` attend to
    CN ``j`` only where the parity-check matrix has ``H[j, i] = 1`` (masked logits set to
    ``-1e9`` before the softmax).

    Adaptation to MCDM's AF (query = ``C_preds_t``, key = value = ``C_mods``):

    - the queries play the magnitude embeddings (the set whose refined state is decoded,
      here the returned output) and the keys play the syndrome embeddings;
    - the parity-check matrix becomes the bipartite connectivity of the two node sets.
      MCDM's modality graph is complete over the present modalities (Eq. 4-5), so that
      connectivity is "every present query node - every present key node" and the masks of
      the two directions reduce to ``key_padding_mask`` (queries reading keys) and
      ``query_padding_mask`` (keys reading queries); masked logits are dropped exactly
      (``-inf``) instead of ``-1e9``;
    - CrossMPT keeps one embedding per node, used as both keys and values, so the key
      set's state is initialised from ``key`` and ``value`` is not read (in MCDM
      ``value`` is ``key``);
    - the key update of the last layer cannot change the query-side output, so it is
      skipped (the result is identical, one block cheaper). ``num_layers >= 2`` is needed
      for the keys' update to reach the output at all, hence the default 2.

    Other choices: ``dropout`` applies to the attention weights and to each residual
    branch (their ``SublayerConnection``); weights Xavier-uniform as theirs, biases zero as
    in ``nn.MultiheadAttention`` (theirs keep ``nn.Linear``'s default). ``ffn_ratio=0``
    removes the FFNs.

    Parameters (``L = num_layers``, ``r = ffn_ratio``):
    ``L * [4(H^2 + H) + 2 r H^2 + r H + H + 4H] + 2H (final norm) + 2H (middle norm, L > 1)``;
    6,306,816 at H = 512, L = 2, r = 4.

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``,
    query_padding_mask ``[B, Lq]`` (True = ignore) -> ``[B, Lq, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int,
        dropout: float = 0.0,
        num_layers: int = 2,
        ffn_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden_dim, num_heads)
        if num_layers < 1:
            raise ValueError(f"CrossMPT needs num_layers >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            [_CrossMPTLayer(hidden_dim, num_heads, dropout, ffn_ratio) for _ in range(num_layers)]
        )
        self.mid_norm = nn.LayerNorm(hidden_dim) if num_layers > 1 else None
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        if self.mid_norm is not None:
            self.mid_norm.reset_parameters()
        self.final_norm.reset_parameters()

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        q, k = query, key  # ``value`` is not read: each key node has one state (see above)
        for idx, layer in enumerate(self.layers, start=1):
            # magnitude-like update: queries read the key nodes (the H^T mask)
            q = layer(q, k, key_padding_mask)
            if idx == self.num_layers:
                break  # the last key update never reaches the returned queries
            # syndrome-like update, same layer weights: keys read the updated queries (the H mask)
            k = layer(k, q, query_padding_mask)
            if self.mid_norm is not None and idx == self.num_layers // 2:
                q = self.mid_norm(q)
                k = self.mid_norm(k)
        return self.final_norm(q)


# ------------------------------------------------------------------ BiCA


class _BiCALayer(nn.Module):
    """One BiXT cross-attention block, bi-directional or (``one_sided``) latents only."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float, ffn_ratio: float, one_sided: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.one_sided = one_sided
        self.dropout = dropout
        self.norm_q = nn.LayerNorm(hidden_dim)
        self.norm_k = nn.LayerNorm(hidden_dim)
        # BiXT's "rv" projections: ONE projection per set gives both its side of the shared
        # similarity (r) and its values (v); the one-sided block needs no query values.
        self.rv_q = nn.Linear(hidden_dim, hidden_dim if one_sided else 2 * hidden_dim)
        self.rv_k = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.out_q = nn.Linear(hidden_dim, hidden_dim)
        self.out_k = None if one_sided else nn.Linear(hidden_dim, hidden_dim)
        self.ffn_q = _FeedForward(hidden_dim, ffn_ratio, dropout) if ffn_ratio > 0 else None
        self.norm_ffn_q = nn.LayerNorm(hidden_dim) if ffn_ratio > 0 else None
        both = ffn_ratio > 0 and not one_sided
        self.ffn_k = _FeedForward(hidden_dim, ffn_ratio, dropout) if both else None
        self.norm_ffn_k = nn.LayerNorm(hidden_dim) if both else None

    def reset_parameters(self) -> None:
        for module in self.children():
            if isinstance(module, nn.Linear):
                _xavier_zero_(module)
            else:  # LayerNorm, _FeedForward
                module.reset_parameters()

    def attention_maps(
        self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None, query_padding_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """``(A_q [B, h, Lq, Lk], A_k [B, h, Lk, Lq] or None, v_k, v_q)`` from ONE logit matrix R."""
        h, d = self.num_heads, self.head_dim
        rv_q = self.rv_q(self.norm_q(q))
        rv_k = self.rv_k(self.norm_k(k))
        r_q, v_q = (rv_q, None) if self.one_sided else rv_q.chunk(2, dim=-1)
        r_k, v_k = rv_k.chunk(2, dim=-1)
        r_q, r_k, v_k = _split_heads(r_q, h), _split_heads(r_k, h), _split_heads(v_k, h)
        logits = r_q @ r_k.transpose(-1, -2) / math.sqrt(d)  # R [B, h, Lq, Lk], computed once
        key_mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        attn_q = _masked_softmax(logits, key_mask, dim=-1)  # latents: softmax over tokens (rows)
        if self.one_sided:
            return attn_q, None, v_k, None
        query_mask = None if query_padding_mask is None else query_padding_mask[:, None, :, None]
        # tokens: softmax of the same R over the latents (columns), read as R^T
        attn_k = _masked_softmax(logits, query_mask, dim=-2).transpose(-1, -2)
        return attn_q, attn_k, v_k, _split_heads(v_q, h)

    def forward(self, q, k, key_padding_mask, query_padding_mask):
        attn_q, attn_k, v_k, v_q = self.attention_maps(q, k, key_padding_mask, query_padding_mask)
        attn_q = F.dropout(attn_q, self.dropout, self.training)
        q = q + F.dropout(self.out_q(_merge_heads(attn_q @ v_k)), self.dropout, self.training)
        if self.ffn_q is not None:
            q = q + F.dropout(self.ffn_q(self.norm_ffn_q(q)), self.dropout, self.training)
        if self.one_sided:
            return q, k
        attn_k = F.dropout(attn_k, self.dropout, self.training)
        k = k + F.dropout(self.out_k(_merge_heads(attn_k @ v_q)), self.dropout, self.training)
        if self.ffn_k is not None:
            k = k + F.dropout(self.ffn_k(self.norm_ffn_k(k)), self.dropout, self.training)
        return q, k


@ATTENTION_LAYERS.register("bica")
class BiCrossAttention(AttentionLayer):
    """Bi-directional cross-attention (Hiller et al. 2024, BiXT, NeurIPS; arXiv:2402.12138).

    BiXT (Fig. 2; authors' ``timm/models/bixt.py``, ``CrossAttention``; also
    lucidrains' ``bidirectional-cross-attention``, the implementation the paper cites)
    lets latents and tokens attend to each other with **one** similarity matrix. Each set
    has a single in-projection giving its "reference" vectors ``R`` and values ``V``::

        A_lat_tok = R_lat R_tok^T / sqrt(d)                    [Lq, Lk], computed once
        latents  += Out_lat( softmax_rows(A_lat_tok)   V_tok )  (softmax over the tokens)
        tokens   += Out_tok( softmax_rows(A_lat_tok^T) V_lat )  (softmax over the latents)

    i.e. the same logits, normalised over columns for the second direction, instead of a
    second pair of query/key projections. BiXT stacks pre-norm residual blocks
    (``LN`` on both inputs, attention, residual; then an MLP per set) and, in its last
    layer, uses the one-sided block (latents only) because the tokens are no longer used.

    Adaptation to MCDM's AF: latents = the query nodes (``C_preds_t``), tokens = the key
    nodes (``C_mods``). ``num_layers - 1`` bi-directional blocks (both sets updated from the
    shared logits) are followed by BiXT's one-sided block, so the keys refined by the
    queries feed the returned query-side output; ``num_layers >= 2`` is needed for the
    bi-directional step to matter, hence the default 2. Masks: the row softmax drops padded
    keys (``key_padding_mask``), the column softmax drops padded queries
    (``query_padding_mask``), so no padded node reaches a present one.

    Simplifications: BiXT's latent self-attention block (between its cross-attention
    blocks) is left out, since MCDM's task graph layer ``GAF_t`` already mixes the query
    nodes; BiXT's per-set MLPs are off by default (``ffn_ratio=0``, the bare module the
    paper cites) and on with ``ffn_ratio > 0``; ``value`` is ignored because BiXT's token
    values come from the token's own "rv" projection of ``key`` (in MCDM ``value`` is
    ``key``). Projections have biases (BiXT's ``rv_bias=True``), Xavier weights and zero
    biases; ``dropout`` applies to both attention maps and to the residual branches.

    Parameters (``r = 0``): ``(L-1) * (6H^2 + 10H) + (4H^2 + 8H)``; 2,630,656 at H = 512, L = 2.

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``,
    query_padding_mask ``[B, Lq]`` (True = ignore) -> ``[B, Lq, H]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        *,
        num_heads: int,
        dropout: float = 0.0,
        num_layers: int = 2,
        ffn_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden_dim, num_heads)
        if num_layers < 1:
            raise ValueError(f"BiCA needs num_layers >= 1, got {num_layers}")
        self.layers = nn.ModuleList(
            [
                _BiCALayer(hidden_dim, num_heads, dropout, ffn_ratio, one_sided=(i == num_layers - 1))
                for i in range(num_layers)
            ]
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    @torch.no_grad()
    def attention_maps(self, query, key, key_padding_mask=None, *, query_padding_mask=None) -> tuple[Tensor, Tensor]:
        """The first (bi-directional) block's maps ``A_q [B, h, Lq, Lk]``, ``A_k [B, h, Lk, Lq]``
        (before dropout), for inspection and tests. Needs ``num_layers >= 2``."""
        if self.layers[0].one_sided:
            raise ValueError("a single-layer BiCA has no bi-directional block")
        attn_q, attn_k, _, _ = self.layers[0].attention_maps(query, key, key_padding_mask, query_padding_mask)
        return attn_q, attn_k

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        q, k = query, key
        for layer in self.layers:
            q, k = layer(q, k, key_padding_mask, query_padding_mask)
        return q


# ------------------------------------------------------------------ FA


@ATTENTION_LAYERS.register("fa")
class ForgettingAttention(_MaskedCrossAttention, AttentionLayer):
    """Forgetting Attention (Lin et al. 2025, "Forgetting Transformer", ICLR; arXiv:2503.02130).

    FoX (section "Forgetting Attention"; authors' ``forgetting_attention.py`` and
    ``ForgettingAttentionLayer``) adds a data-dependent, per-head forget gate to causal
    softmax attention::

        f_t  = sigmoid(w_f^T x_t + b_f)                      (scalar per head and position)
        D_ij = sum_{l=j+1..i} log f_l = c_i - c_j,  c_i = sum_{l<=i} log f_l   (j <= i)
        o_i  = sum_j softmax_j(q_i^T k_j / sqrt(d) + D_ij) v_j

    so with every ``f = 1`` (``D = 0``) it is plain softmax attention.

    Adaptation to cross-attention over modality nodes: the keys are a sequence in the
    model's modality order (video, audio, text, behavior), the forget gates are computed
    from the key inputs ``x_t = key[:, t]``, and every query is placed *after* the last key,
    like a decoding query reading its whole cache (the authors' kernel aligns a query
    block with the last key positions, ``P_SEQ = Lk - Lq``; with one step the query sits at
    ``Lk``). The bias then depends on the key position only::

        D_j = sum_{l=j+1..Lk} log f_l        o_i = sum_j softmax_j(q_i^T k_j / sqrt(d) + D_j) v_j

    all keys are visible (causality holds trivially), a key is down-weighted by the gates
    of the modalities after it, and the last modality is never decayed. The gate of the
    first key never enters ``D`` (as in FoX). A padded (missing) key gets ``log f = 0``:
    it neither decays the keys before it nor, through its features, changes anything (the
    authors zero the gates of left-padded positions for the same reason).
    The alternative of aligning query ``i`` with key ``i`` (``D_ij`` with a causal mask)
    was rejected: it makes the first modality's query see a single key, and that query
    would see no key at all when the first modality is missing.

    Simplifications: the basic FoX layer (no "Pro" output gate, QK-norm or KV-shift).
    Projections as ``nn.MultiheadAttention`` (biased, Xavier weights, zero biases) so that
    with the forget gates at 1 the layer *is* MHA; the gate projection ``H -> heads`` with
    bias, weights ``N(0, 0.02^2)`` and zero bias as in the FoX code. ``dropout`` applies to
    the attention weights.

    Parameters: ``4 * (H*H + H) + heads * (H + 1)``; 1,054,728 at H = 512, 8 heads.

    Shapes: query ``[B, Lq, H]``, key/value ``[B, Lk, H]``, key_padding_mask ``[B, Lk]``
    (True = ignore) -> ``[B, Lq, H]``; :meth:`forget_bias` ``-> [B, heads, Lk]``.
    """

    def __init__(self, hidden_dim: int, *, num_heads: int, dropout: float = 0.0, gate_init_std: float = 0.02) -> None:
        _check_heads(hidden_dim, num_heads)
        super().__init__(hidden_dim, num_heads, dropout)
        self.gate_init_std = gate_init_std
        self.fgate_proj = nn.Linear(hidden_dim, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.normal_(self.fgate_proj.weight, std=self.gate_init_std)
        nn.init.zeros_(self.fgate_proj.bias)

    def forget_bias(self, key: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``D [B, heads, Lk]``: ``D_j = sum_{l=j+1..Lk} log f_l`` (padded keys: ``log f = 0``)."""
        log_f = F.logsigmoid(self.fgate_proj(key)).transpose(1, 2)  # [B, h, Lk]
        if key_padding_mask is not None:
            log_f = log_f.masked_fill(key_padding_mask[:, None, :], 0.0)
        # suffix sums without the j-th term; a reversed cumsum avoids the cancellation of c_Lk - c_j
        suffix = log_f.flip(-1).cumsum(-1).flip(-1)  # sum_{l >= j}
        return torch.cat([suffix[..., 1:], torch.zeros_like(suffix[..., :1])], dim=-1)

    def forward(self, query, key, value, key_padding_mask=None, *, query_padding_mask=None):
        bias = self.forget_bias(key, key_padding_mask)[:, :, None, :]  # [B, h, 1, Lk]
        return super().forward(query, key, value, key_padding_mask, score_bias=bias)
