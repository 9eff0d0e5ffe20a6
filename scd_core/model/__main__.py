"""Describe an MCDM configuration: ``python -m scd_core.model [--config YAML] [key=value ...]``.

Builds the model from the experiment config (``scd_core.config.load_config``) with the
paper's input sizes (``PAPER_FEATURE_DIMS``) and prints its parameter count and size.
With no arguments it describes the paper's best configuration (MCDM-2, Table 17:
9.756 M parameters, 37.2 MB). ``--named MCDM-1`` is shorthand for the graph/attention
overrides of a named model of Table 1. Examples::

    python -m scd_core.model
    python -m scd_core.model model.graph=gat data.modalities=[video,text]
    python -m scd_core.model --named MCDM-3 model.guide_banks=false
"""

from __future__ import annotations

import argparse
import sys

from scd_core.checkpoint import ModelSpec, build_on_meta
from scd_core.config import ConfigError, load_config
from scd_core.model import NAMED_MODELS, named_model
from scd_core.model.mcdm import count_parameters, model_name, size_mb
from scd_core.tasks import PAPER_FEATURE_DIMS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd_core.model", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiment YAML (default: the paper's best values)")
    parser.add_argument("--named", choices=sorted(NAMED_MODELS), help="a named model of Table 1")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. model.graph=gat")
    args = parser.parse_args(argv)

    overrides = list(args.overrides)
    if args.named:
        overrides = [f"model.{k}={v}" for k, v in named_model(args.named).items()] + overrides
    try:
        cfg = load_config(args.config, overrides)
        dims = {m: PAPER_FEATURE_DIMS[m] for m in cfg.data.modalities}
        # counted, never allocated: any size can be described
        model = build_on_meta(ModelSpec(cfg, dims, list(cfg.data.tasks)))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    m = cfg.model
    print(f"model: {model_name(m.graph, m.attention) or 'custom'} (graph={m.graph}, attention={m.attention}, "
          f"task_projectors={m.task_projectors}, guide_banks={m.guide_banks})")
    print(f"hidden_dim: {m.hidden_dim}, out_features: {m.out_features}, num_heads: {m.num_heads}")
    print("modalities: " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    print("tasks: " + ", ".join(cfg.data.tasks))
    for name, count in model.parameter_breakdown().items():
        print(f"  {name}: {count}")
    print(f"parameters: {count_parameters(model)}")
    print(f"size_mb: {size_mb(model):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
