"""Load the Scenic reference fixtures (made by Scenic's own code) and build matching models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vivit.models.vivit import MODEL_CLASSES

DATA = Path(__file__).parent / "data" / "scenic"
FORWARD = DATA / "forward"
FORWARD_NAMES = sorted(p.stem for p in FORWARD.glob("*.json"))

_ATTENTION_TO_VARIANT = {
    "spacetime": "st",
    "factorized_encoder": "fe",
    "factorized_self_attention_block": "fsa",
    "factorized_dot_product_attention": "fdp",
}


def model_args_from_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Translate a Scenic ViViT config into (variant, our constructor arguments)."""
    m, data = config["model"], config["dataset_configs"]
    variant = _ATTENTION_TO_VARIANT[m["attention_config"]["type"]]
    patch = m["patches"]["size"]  # Scenic orders it (h, w[, t])
    sampling = m["temporal_encoding_config"]["method"] == "temporal_sampling"
    args: dict[str, Any] = dict(
        img_size=tuple(data["input_hw"]),
        num_frames=m["temporal_encoding_config"]["n_sampled_frames"] if sampling else data["num_frames"],
        patch_size=tuple(patch[:2]),
        tubelet_size=1 if sampling else patch[2],
        embed_dim=m["hidden_size"],
        num_classes=data["num_classes"],
        global_pool="token" if m["classifier"] == "token" else "avg",
    )
    if variant == "fe":
        spatial, temporal = m["spatial_transformer"], m["temporal_transformer"]
        args.update(
            depth=spatial["num_layers"],
            num_heads=spatial["num_heads"],
            mlp_dim=spatial["mlp_dim"],
            temporal_depth=temporal["num_layers"],
            temporal_num_heads=temporal["num_heads"],
            temporal_mlp_dim=temporal["mlp_dim"],
        )
    else:
        args.update(depth=m["num_layers"], num_heads=m["num_heads"], mlp_dim=m["mlp_dim"])
    if variant == "fsa":
        args["attention_order"] = m["attention_config"]["attention_order"]
    return variant, args


def load_forward_fixture(name: str) -> dict[str, Any]:
    """The fixture's model, Scenic params, our-layout input (B, C, T, H, W) and reference logits."""
    meta = json.loads((FORWARD / f"{name}.json").read_text())
    arrays = np.load(FORWARD / f"{name}.npz")
    params = {k: arrays[k] for k in arrays.files if k not in ("input", "logits")}
    variant, args = model_args_from_config(meta["config"])
    video = torch.from_numpy(arrays["input"]).permute(0, 4, 1, 2, 3)  # NTHWC -> NCTHW
    if meta["temporal_sampling_frame_indices"] is not None:
        video = video[:, :, meta["temporal_sampling_frame_indices"]]
    acts_path = FORWARD / f"{name}.acts.npz"
    return dict(
        meta=meta,
        variant=variant,
        model=MODEL_CLASSES[variant](**args).eval(),
        params=params,
        video=video,
        logits=torch.from_numpy(arrays["logits"]),
        acts=np.load(acts_path) if acts_path.exists() else None,
    )


def write_flax_checkpoint(params: dict[str, np.ndarray], path: Path) -> None:
    """Serialise '/'-joined params as a Scenic train state, the way flax.serialization does."""
    import msgpack

    tree: dict[str, Any] = {}
    for name, value in params.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        array = np.ascontiguousarray(value)
        node[leaf] = msgpack.ExtType(1, msgpack.packb([list(array.shape), array.dtype.name, array.tobytes()]))
    path.write_bytes(msgpack.packb({"optimizer": {"target": tree, "state": {"step": 0}}}))
