"""MCDM, the multimodal cross-domain model of paper section 2.3 (Figure 2, Eq. 1-13)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from scd_core.model.blocks import GuideBank, ModalityProjector, TaskHead, TaskProjector
from scd_core.model.graph import modality_adjacency
from scd_core.model.registries import ATTENTION_LAYERS, GRAPH_LAYERS
from scd_core.tasks import TASKS

if TYPE_CHECKING:  # the config sits above the model (it names its layers): a type-only import
    from scd_core.config import ModelConfig

# 2^N operators of (2N)^2 floats each: a table up to 10 modalities (about 6 MiB), else per batch.
MAX_TABULATED_MODALITIES = 10

__all__ = ["MCDM", "SharedState", "NAMED_MODELS", "named_model", "model_name", "count_parameters", "size_mb"]

NAMED_MODELS: dict[str, dict[str, str]] = {
    "MCDM-1": {"graph": "gat", "attention": "mha"},
    "MCDM-2": {"graph": "unitary", "attention": "mha"},
    "MCDM-3": {"graph": "unitary", "attention": "mta"},
}
"""Table 1's named configurations: MCDM-1 vanilla GNN + MHA, MCDM-2 UCGNN + MHA (the
paper's best, the ``ModelConfig`` default), MCDM-3 UCGNN + MTA."""


def named_model(name: str) -> dict[str, str]:
    """``"MCDM-2"`` -> ``{"graph": "unitary", "attention": "mha"}`` (a fresh dict)."""
    try:
        return dict(NAMED_MODELS[name])
    except KeyError:
        raise KeyError(f"unknown named model {name!r}; choose one of {sorted(NAMED_MODELS)}") from None


def model_name(graph: str, attention: str) -> str | None:
    """Inverse of :func:`named_model`; None for a combination Table 1 does not name."""
    for name, spec in NAMED_MODELS.items():
        if spec == {"graph": graph, "attention": attention}:
            return name
    return None


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def size_mb(module: nn.Module) -> float:
    """Bytes of what a checkpoint holds (parameters and persistent buffers) in MiB (2**20),
    the unit of Table 17's "MB"."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 2**20


@dataclass
class SharedState:
    """The trunk's output that every task branch reads (``B`` samples, ``N`` nodes, ``H``).

    z, c_mods: [B, N, H] projected modalities and their shared-graph contextualisation;
    adj: [B, N, N] bool; operator: the graph layer's per-batch precomputation;
    padding: [B, N] bool, True = missing modality; count: [B, 1] present modalities.
    """

    z: Tensor
    c_mods: Tensor
    adj: Tensor
    operator: Any
    padding: Tensor
    count: Tensor


class MCDM(nn.Module):
    """Multimodal Cross-Domain Model (paper section 2.3).

    Data flow (``B`` samples, ``N`` modalities, hidden size ``H``, ``C_t`` outputs of task t):

    1. ``Z [B, N, H]``: one :class:`ModalityProjector` per modality (Eq. 1-3);
       a missing modality's row is replaced by zeros *before* its projector, so NaN
       placeholders never reach the network or its gradients.
    2. ``C_mods = GAF(Z, A)``: the shared graph layer (Eq. 4-5) over a fully connected
       graph of the present modalities with self-loops (:func:`modality_adjacency`);
       ``graph_self_loops`` sets a layer's switch (``unitary`` drops them by default, as
       the authors' code; None keeps each layer's default).
    3. Per task t: ``L_t, P_t = TaskProjector_t(Z)`` (Eq. 6-7),
       ``C_preds_t = GAF_t(P_t, A)`` (Eq. 8),
       ``T_t = AF_t(C_preds_t, C_mods, C_mods)`` with missing modalities as padded keys
       (Eq. 9), ``r_t`` = mean of ``T_t`` over the present nodes (Eq. 10),
       ``head_t = h_t(r_t)`` (Eq. 11), ``sim_t = cos(r_t, G_t)`` (Eq. 12).
    4. Eq. 13: ``(head + sim) / 2`` (logits) for classification tasks (emo, ah);
       ``(sigmoid(head) + sigmoid(sim)) / 2`` in ``[0, 1]`` for the regression task (pt).

    A missing node keeps only its self-loop, so it sends no graph message; it is a padded
    key of every attention and is left out of the mean: its features cannot change any
    output. A sample with every modality missing is an error.

    Ablations of Table 1 (rows 7-17), each a switch of ``ModelConfig``/``DataConfig``:

    - ``task_projectors=False``: no task projectors and no per-task graph layers; the query
      of each task's attention is the shared ``C_mods`` itself (task-specific
      self-attention over the contextualised modality nodes). Table 17 confirms the per-task
      graph layers go with the projectors (8.159 M = full - projectors - 3 graph layers).
    - ``graph="none"``: every graph layer (shared and per task) is the identity, as the
      paper says ("the identity operator is used instead").
    - ``attention="none"``: each AF is replaced by the parameter-free node-wise sum
      ``C_preds_t + C_mods`` (:class:`~scd_core.model.attention.ResidualSum`), so both
      branches still reach the head (the paper does not say what replaces AF).
    - ``guide_banks=False``: no prototypes; the output is the head alone (``head`` for
      emo/ah, ``sigmoid(head)`` for pt).
    - fewer modalities / tasks: pass fewer ``modality_dims`` / ``tasks`` (``data.modalities``,
      ``data.tasks``).

    Parameter count (Table 17 reverse-engineered; the paper gives no per-layer sizes):
    at the paper's best configuration (H = 512, out_features = 512, 8 heads, inputs
    1024/1536/1536/1536, three tasks, MCDM-2) this model has **9,755,932** parameters =
    9.756 M and 37.22 MiB in float32, and *every* row of Table 17 is reproduced to the
    printed precision: modality projector ``d_m*H + H`` + adapter (262,912) + LayerNorm
    (w/o video -0.789 M, w/o audio -1.051 M); graph layer 263,168 each
    (``H*H + H`` + ``H`` global bias of the unitary layer, 4 layers = 1.053 M);
    cross-attention ``nn.MultiheadAttention`` 1,050,624 each (3 = 3.152 M); guide banks
    ``sum C_t * H`` = 7,168; task projector ``H*C_t + C_t`` + ``C_t*H + H`` + adapter +
    LayerNorm; head ``H*out + out + out*C_t + C_t``. Table 17's "MB" is float32 bytes /
    2**20. A ``gat`` layer has ``H`` more than a ``unitary`` one (attention vector ``a`` of
    ``2H`` and one bias instead of two), and ``mta``
    ``2*heads*9 + 2*heads^2 + 2*head_dim + 1`` more per attention (401 at 8 heads), so MCDM-1 and
    MCDM-3 are slightly larger.

    GradNorm's shared parameters are explicit, see :meth:`shared_parameters`.
    """

    def __init__(
        self,
        modality_dims: Mapping[str, int],
        tasks: Sequence[str],
        *,
        hidden_dim: int = 512,
        out_features: int = 512,
        num_heads: int = 8,
        dropout: float = 0.15,
        graph: str = "unitary",
        attention: str = "mha",
        task_projectors: bool = True,
        guide_banks: bool = True,
        graph_self_loops: bool | None = None,
    ) -> None:
        super().__init__()
        if not modality_dims:
            raise ValueError("MCDM needs at least one modality")
        if not tasks:
            raise ValueError("MCDM needs at least one task")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be unique, got {list(tasks)}")
        self.modalities: tuple[str, ...] = tuple(modality_dims)
        self.modality_dims: dict[str, int] = dict(modality_dims)
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.num_outputs: dict[str, int] = {t: TASKS[t].num_outputs for t in self.tasks}
        self.hidden_dim = hidden_dim
        self.graph_name = graph
        self.attention_name = attention
        self.use_task_projectors = task_projectors
        self.use_guide_banks = guide_banks

        graph_cls = GRAPH_LAYERS.get(graph)
        attention_cls = ATTENTION_LAYERS.get(attention)

        # None: the layer's own default (unitary: none, as the authors' code); else its switch.
        loops = {} if graph_self_loops is None else {"self_loops": graph_self_loops}

        def make_graph() -> nn.Module:
            return graph_cls(hidden_dim, num_heads=num_heads, dropout=dropout, **loops)

        self.modality_projectors = nn.ModuleDict(
            {m: ModalityProjector(d, hidden_dim, dropout=dropout) for m, d in self.modality_dims.items()}
        )
        self.shared_graph = make_graph()
        # An operator that depends on the adjacency alone comes from a table over the 2^N
        # presence patterns: one gather per batch instead of its computation (the unitary
        # layer's Taylor series, about 50 kernels a training step). Rebuilt here, never saved.
        tabulate = graph_cls.adjacency_only_precompute and len(self.modalities) <= MAX_TABULATED_MODALITIES
        self.register_buffer("operator_table", self._operator_table() if tabulate else None, persistent=False)
        self.task_projectors = nn.ModuleDict()
        self.task_graphs = nn.ModuleDict()
        if task_projectors:
            for t in self.tasks:
                self.task_projectors[t] = TaskProjector(hidden_dim, self.num_outputs[t], dropout=dropout)
                self.task_graphs[t] = make_graph()
        self.attentions = nn.ModuleDict(
            {t: attention_cls(hidden_dim, num_heads=num_heads, dropout=dropout) for t in self.tasks}
        )
        self.heads = nn.ModuleDict(
            {t: TaskHead(hidden_dim, out_features, self.num_outputs[t], dropout=dropout) for t in self.tasks}
        )
        self.guide_banks = nn.ModuleDict(
            {t: GuideBank(hidden_dim, self.num_outputs[t]) for t in self.tasks} if guide_banks else {}
        )

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, modality_dims: Mapping[str, int], tasks: Sequence[str]) -> "MCDM":
        """Build from the typed config; modalities and tasks in the order given."""
        return cls(
            modality_dims,
            tasks,
            hidden_dim=model_cfg.hidden_dim,
            out_features=model_cfg.out_features,
            num_heads=model_cfg.num_heads,
            dropout=model_cfg.dropout,
            graph=model_cfg.graph,
            attention=model_cfg.attention,
            task_projectors=model_cfg.task_projectors,
            guide_banks=model_cfg.guide_banks,
            graph_self_loops=model_cfg.graph_self_loops,
        )

    # ------------------------------------------------------------------ parameters

    def reset_parameters(self) -> None:
        for group in (self.modality_projectors, self.task_projectors, self.task_graphs,
                      self.attentions, self.heads, self.guide_banks):
            for module in group.values():
                module.reset_parameters()
        self.shared_graph.reset_parameters()

    def _operator_table(self) -> Tensor:
        """The shared graph layer's operator for every presence pattern, ``[2] * N + op shape``:
        ``table[m_1, ..., m_N]`` is the operator when modality i is present iff ``m_i == 1``."""
        n = len(self.modalities)
        patterns = torch.tensor(list(itertools.product((False, True), repeat=n)))  # [2^N, N], first most significant
        operators = self.shared_graph.precompute(modality_adjacency(patterns))
        return operators.reshape(*([2] * n), *operators.shape[1:])

    def shared_parameters(self) -> list[nn.Parameter]:
        """theta_shared of GradNorm (Eq. 16): the modality projectors and the shared graph layer.

        This follows the paper: the modality projectors and the shared GAF produce the
        representation every task uses (``Z`` and ``C_mods``); everything else belongs to
        one task (:meth:`task_parameters`). The authors' public code instead treats every
        non-task parameter as shared via a name filter; here the list is built from the
        modules, never from names. With ``graph="none"`` only the projectors remain.
        """
        return list(self.modality_projectors.parameters()) + list(self.shared_graph.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters used by one task only: its projector, graph layer, attention, head, bank."""
        if task not in self.tasks:
            raise KeyError(f"task {task!r} is not in this model ({list(self.tasks)})")
        params: list[nn.Parameter] = []
        for group in (self.task_projectors, self.task_graphs, self.attentions, self.heads, self.guide_banks):
            if task in group:
                params.extend(group[task].parameters())
        return params

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameter count per component (the rows that Table 17's ablations remove)."""
        return {
            "modality_projectors": count_parameters(self.modality_projectors),
            "shared_graph": count_parameters(self.shared_graph),
            "task_projectors": count_parameters(self.task_projectors),
            "task_graphs": count_parameters(self.task_graphs),
            "attentions": count_parameters(self.attentions),
            "heads": count_parameters(self.heads),
            "guide_banks": count_parameters(self.guide_banks),
        }

    # ------------------------------------------------------------------ forward

    def _modality_mask(self, features: Mapping[str, Tensor], modality_mask: Tensor | None,
                       validate: bool = True) -> Tensor:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"features lack modality {missing}; the model expects {list(self.modalities)}")
        first = features[self.modalities[0]]
        batch = first.size(0)
        for m in self.modalities:
            x = features[m]
            if x.dim() != 2 or x.size(0) != batch or x.size(1) != self.modality_dims[m]:
                raise ValueError(
                    f"features[{m!r}] must have shape [{batch}, {self.modality_dims[m]}], got {list(x.shape)}"
                )
        if modality_mask is None:
            return torch.ones(batch, len(self.modalities), dtype=torch.bool, device=first.device)
        if modality_mask.dtype != torch.bool or tuple(modality_mask.shape) != (batch, len(self.modalities)):
            raise ValueError(
                f"modality_mask must be a bool tensor of shape [{batch}, {len(self.modalities)}] "
                f"(modalities {list(self.modalities)}), got {modality_mask.dtype} {list(modality_mask.shape)}"
            )
        if not validate:  # the caller vouches for its rows; the check below reads the mask on the host
            return modality_mask
        present = modality_mask.any(dim=1)
        if not bool(present.all()):
            empty = (~present).nonzero().flatten().tolist()
            raise ValueError(f"sample(s) {empty} of the batch have every modality missing; MCDM needs at least one")
        return modality_mask

    def encode(self, features: Mapping[str, Tensor], modality_mask: Tensor | None = None,
               validate: bool = True) -> SharedState:
        """The shared trunk: modality projectors and the shared graph layer (Eq. 1-5).

        ``validate=False`` skips the check that every row has a modality, the one step of the
        forward pass that reads a device value on the host: for a training step whose rows
        were checked when loaded (a step captured in a CUDA graph cannot synchronise).
        """
        mask = self._modality_mask(features, modality_mask, validate)
        z = torch.stack(
            [
                self.modality_projectors[m](torch.where(mask[:, i, None], features[m], 0.0))
                for i, m in enumerate(self.modalities)
            ],
            dim=1,
        )  # [B, N, H]
        adj = modality_adjacency(mask)  # [B, N, N]
        if self.operator_table is None:
            operator = self.shared_graph.precompute(adj)  # once per batch, shared by all graph layers
        else:
            operator = self.operator_table[mask.long().unbind(1)]
        return SharedState(
            z=z,
            c_mods=self.shared_graph(z, adj, operator),
            adj=adj,
            operator=operator,
            padding=~mask,
            count=mask.sum(dim=1, keepdim=True).to(z.dtype),  # [B, 1], >= 1
        )

    def decode(self, state: SharedState, task: str) -> Tensor:
        """One task's branch (Eq. 6-13) on the shared state; ``[B, C_t]``."""
        if self.use_task_projectors:
            _, p = self.task_projectors[task](state.z)  # L_t [B, N, C_t], P_t [B, N, H]
            query = self.task_graphs[task](p, state.adj, state.operator)
        else:
            query = state.c_mods
        padding = state.padding
        tokens = self.attentions[task](query, state.c_mods, state.c_mods, padding, query_padding_mask=padding)
        r = tokens.masked_fill(padding.unsqueeze(-1), 0.0).sum(dim=1) / state.count  # [B, H]
        head = self.heads[task](r)
        regression = TASKS[task].kind == "regression"
        if self.use_guide_banks:
            sim = self.guide_banks[task](r)
            return (torch.sigmoid(head) + torch.sigmoid(sim)) / 2 if regression else (head + sim) / 2
        return torch.sigmoid(head) if regression else head

    def forward(self, features: Mapping[str, Tensor], modality_mask: Tensor | None = None,
                validate: bool = True) -> dict[str, Tensor]:
        """Predict every task (``encode`` then ``decode`` per task).

        Args:
            features: modality name -> ``[B, d_m]`` float; rows of missing modalities may
                hold anything (NaN included).
            modality_mask: ``[B, N]`` bool in the model's modality order, True = present;
                None = all present.
            validate: see :meth:`encode`.

        Returns:
            task -> ``[B, C_t]``: logits per Eq. 13 for classification tasks (emo, ah),
            values in ``[0, 1]`` for pt.
        """
        state = self.encode(features, modality_mask, validate)
        return {t: self.decode(state, t) for t in self.tasks}
