"""`vivit list` (registered names) and `vivit info` (what a model is: size, compute, input, weights)."""

from __future__ import annotations

import argparse

import torch

from ..info import describe_model
from ..models.registry import list_models
from . import console
from .options import CommandError, add_override_option, add_quiet_option, model_choice


def add_list_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("list", help="list model names", description="List registered model names, one per line.")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern (vivit_b_*) or substring (fe_k4)")
    p.add_argument("--pretrained", action="store_true", help="only names that come with weights")
    add_quiet_option(p)
    p.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = list_models(pattern, pretrained=args.pretrained)
    if not names:
        kind = "pretrained model" if args.pretrained else "model"
        raise CommandError(f"no {kind} name matches {args.pattern!r}")
    for name in names:
        console.out(name)
    return 0


def add_info_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "info", help="describe a model", description="Parameters, compute, input, preprocessing and weights of a model."
    )
    p.add_argument("name", metavar="NAME", help="registered model name, or local-dir:PATH / hf-hub:org/repo")
    add_override_option(p)
    add_quiet_option(p)
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    choice = model_choice(args, name=args.name, need_weights=False)
    # The meta device allocates nothing: even ViViT-H is described instantly.
    with torch.device("meta"):
        model = choice.load(torch.device("meta"))
    cfg = choice.entry.pretrained_cfg if choice.entry is not None else model.pretrained_cfg
    console.out(choice.name)
    for field, text in describe_model(model, cfg, name=choice.entry.name if choice.entry else None):
        console.out(f"  {field:<14} {text}")
    return 0
