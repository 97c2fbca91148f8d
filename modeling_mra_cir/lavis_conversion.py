"""LAVIS BLIP-2 checkpoints (the format SPRC and CoVR-2 release) to an `MraCirModel`, and back.

LAVIS' `blip2_feature_extractor` / `blip2_image_text_retrieval` (class `Blip2Qformer`) and the CIR models built on it
(SPRC's `blip2_cir_align_prompt`, CoVR-2's `BLIP2Cir`) hold an EVA ViT (`visual_encoder.*` + `ln_vision`), a BERT
Q-Former with an LM head (`Qformer.bert.*`, `Qformer.cls.*`), `query_tokens`, `vision_proj`, `text_proj`, `itm_head`
and `temp`. The key map is the one of transformers' BLIP-2 conversion (`convert_blip_2_original_to_pytorch.py`):
`ln_vision` is the vision tower's `post_layernorm`, `Qformer.bert.embeddings.LayerNorm` is `qformer.layernorm`, the
ViT's `q_bias` / `v_bias` become one `qkv.bias` (the key bias is zero), `...attention.self.*` is
`...attention.attention.*`. Dropped on purpose: `Qformer.cls.*` (the captioning LM head, which `MraCirModel` does not
have) and the `position_ids` buffer. Everything else must map, or the conversion stops with the unmatched keys named
(`ignore_keys` drops more on purpose, e.g. SPRC's `prompt_tokens`, used only by its training loss).

What converts is the weights, not another method's inference: the composed query of the result is MRA-CIR's (the
BLIP-2 fused path at position Q). SPRC (a second text-only Q-Former pass) and CoVR-2 (the mean over the query
positions) compose differently, so their published numbers are not what `mra-cir evaluate` measures on a converted
checkpoint; image features (`vision_proj` over the query tokens) are the same.

Example:

```python
>>> from mra_cir.modeling_mra_cir.lavis_conversion import convert_lavis_checkpoint
>>> report = convert_lavis_checkpoint("sprc_cirr.pt", "sprc-mra-cir/", base_model="Salesforce/blip2-itm-vit-g",
...                                   ignore_keys=["prompt_tokens"])
```
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .configuration_mra_cir import MraCirConfig

_LAYER = r"Qformer\.bert\.encoder\.layer\.(\d+)\."
_BLOCK = r"visual_encoder\.blocks\.(\d+)\."
#: LAVIS key (regular expression, full match) -> MraCirModel key (`\1` = the layer index)
RENAMES: tuple[tuple[str, str], ...] = (
    (r"visual_encoder\.cls_token", "vision_model.embeddings.class_embedding"),
    (r"visual_encoder\.pos_embed", "vision_model.embeddings.position_embedding"),
    (r"visual_encoder\.patch_embed\.proj\.(weight|bias)", r"vision_model.embeddings.patch_embedding.\1"),
    (r"ln_vision\.(weight|bias)", r"vision_model.post_layernorm.\1"),
    (_BLOCK + r"norm1\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm1.\2"),
    (_BLOCK + r"norm2\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm2.\2"),
    (_BLOCK + r"attn\.qkv\.weight", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
    (_BLOCK + r"attn\.proj\.(weight|bias)", r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
    (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight", r"embeddings.\1.weight"),
    (r"Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)", r"qformer.layernorm.\1"),
    (
        _LAYER + r"(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)",
        r"qformer.encoder.layer.\1.\2.attention.\3.\4",
    ),
    (
        _LAYER + r"(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)",
        r"qformer.encoder.layer.\1.\2.output.\3.\4",
    ),
    (_LAYER + r"(output|output_query)\.(dense|LayerNorm)\.(weight|bias)", r"qformer.encoder.layer.\1.\2.\3.\4"),
    (_LAYER + r"(intermediate|intermediate_query)\.dense\.(weight|bias)", r"qformer.encoder.layer.\1.\2.dense.\3"),
    (r"query_tokens", "query_tokens"),
    (r"vision_proj\.(weight|bias)", r"vision_projection.\1"),
    (r"text_proj\.(weight|bias)", r"text_projection.\1"),
    (r"itm_head\.(weight|bias)", r"itm_head.\1"),
    (r"temp", "logit_temperature"),
)
_OURS = r"qformer\.encoder\.layer\.(\d+)\."
_VIT = r"vision_model\.encoder\.layers\.(\d+)\."
#: MraCirModel key -> LAVIS key, for [`mra_cir_to_lavis`] (written out, not derived: a second reading of the map)
INVERSE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"vision_model\.embeddings\.class_embedding", "visual_encoder.cls_token"),
    (r"vision_model\.embeddings\.position_embedding", "visual_encoder.pos_embed"),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", r"visual_encoder.patch_embed.proj.\1"),
    (r"vision_model\.post_layernorm\.(weight|bias)", r"ln_vision.\1"),
    (_VIT + r"layer_norm1\.(weight|bias)", r"visual_encoder.blocks.\1.norm1.\2"),
    (_VIT + r"layer_norm2\.(weight|bias)", r"visual_encoder.blocks.\1.norm2.\2"),
    (_VIT + r"self_attn\.qkv\.weight", r"visual_encoder.blocks.\1.attn.qkv.weight"),
    (_VIT + r"self_attn\.projection\.(weight|bias)", r"visual_encoder.blocks.\1.attn.proj.\2"),
    (_VIT + r"mlp\.(fc1|fc2)\.(weight|bias)", r"visual_encoder.blocks.\1.mlp.\2.\3"),
    (r"embeddings\.(word_embeddings|position_embeddings)\.weight", r"Qformer.bert.embeddings.\1.weight"),
    (r"qformer\.layernorm\.(weight|bias)", r"Qformer.bert.embeddings.LayerNorm.\1"),
    (
        _OURS + r"(attention|crossattention)\.attention\.(query|key|value)\.(weight|bias)",
        r"Qformer.bert.encoder.layer.\1.\2.self.\3.\4",
    ),
    (
        _OURS + r"(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)",
        r"Qformer.bert.encoder.layer.\1.\2.output.\3.\4",
    ),
    (_OURS + r"(output|output_query)\.(dense|LayerNorm)\.(weight|bias)", r"Qformer.bert.encoder.layer.\1.\2.\3.\4"),
    (_OURS + r"(intermediate|intermediate_query)\.dense\.(weight|bias)", r"Qformer.bert.encoder.layer.\1.\2.dense.\3"),
    (r"query_tokens", "query_tokens"),
    (r"vision_projection\.(weight|bias)", r"vision_proj.\1"),
    (r"text_projection\.(weight|bias)", r"text_proj.\1"),
    (r"itm_head\.(weight|bias)", r"itm_head.\1"),
    (r"logit_temperature", "temp"),
)
_QV_BIAS = re.compile(_BLOCK + r"attn\.(q_bias|v_bias)")
#: LAVIS keys with no counterpart, dropped on purpose (regular expressions, full match)
DROPPED: tuple[str, ...] = (r"Qformer\.cls\..*", r"Qformer\.bert\.embeddings\.position_ids")
#: MraCirModel keys a LAVIS checkpoint may lack: kept at their initial values (CoVR-2 saves neither; both are unused
#: by retrieval, and the temperature only matters for training)
OPTIONAL: tuple[str, ...] = ("logit_temperature", "itm_head.weight", "itm_head.bias")
CONTAINER_KEYS = ("model", "state_dict", "module")


class LavisConversionError(ValueError):
    """A LAVIS checkpoint that does not map onto `MraCirModel` (the message names the keys)."""


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_lavis_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a LAVIS checkpoint file, read with `torch.load(weights_only=True)` (no code runs).

    Accepts a flat state dict or one wrapped as LAVIS (`{"model": ...}`), Lightning (`{"state_dict": ...}`), DDP
    (`{"module": ...}`) or SPRC (`{"<ModelClassName>": ...}`, the only dict-of-tensors entry) save it; a `module.` or
    `model.` prefix shared by every key is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LAVIS checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends: objects that weights_only refuses
        raise LavisConversionError(
            f"{path}: torch.load(weights_only=True) refused the file ({type(err).__name__}: {str(err)[:300]}). It "
            "holds Python objects beside the tensors. If you trust the file, extract the state dict once: "
            "python -c \"import torch; c = torch.load('IN', weights_only=False); torch.save(c['model'], 'OUT.pth')\""
        ) from err
    state = _unwrap(data, str(path))
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _unwrap(data: Any, where: str) -> dict[str, torch.Tensor]:
    if _is_state_dict(data):
        return dict(data)
    if isinstance(data, Mapping):
        for key in CONTAINER_KEYS:
            if _is_state_dict(data.get(key)):
                return dict(data[key])
        candidates = [k for k, v in data.items() if _is_state_dict(v)]
        if len(candidates) == 1:
            return dict(data[candidates[0]])
        raise LavisConversionError(
            f"{where}: no state dict found: top-level keys {sorted(map(str, data))[:10]}; expected tensors, or one of "
            f"{CONTAINER_KEYS} holding them"
        )
    raise LavisConversionError(f"{where}: expected a dict of tensors, got {type(data).__name__}")


def lavis_to_mra_cir(
    state_dict: Mapping[str, torch.Tensor], ignore_keys: Sequence[str] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Rename a LAVIS BLIP-2 state dict to `MraCirModel` names.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): the LAVIS state dict (prefixes already removed).
        ignore_keys (`Sequence[str]`, defaults to `()`): more LAVIS keys to drop on purpose (regular expressions, full
            match; e.g. `prompt_tokens` for SPRC).

    Returns:
        `(converted, report)`: the renamed tensors, and `report` with `dropped` (keys dropped on purpose) and
        `unmatched` (keys no rule knows: the caller refuses to go on when there are any).
    """
    ignored = [re.compile(p) for p in (*DROPPED, *ignore_keys)]
    rules = [(re.compile(src), dst) for src, dst in RENAMES]
    out: dict[str, torch.Tensor] = {}
    dropped, unmatched, qv_bias = [], [], {}
    for key, tensor in state_dict.items():
        match = _QV_BIAS.fullmatch(key)
        if match:
            qv_bias.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
            continue
        for pattern, target in rules:
            if pattern.fullmatch(key):
                out[pattern.sub(target, key)] = tensor
                break
        else:
            (dropped if any(p.fullmatch(key) for p in ignored) else unmatched).append(key)
    for layer, biases in sorted(qv_bias.items()):
        if set(biases) != {"q_bias", "v_bias"}:
            unmatched += [f"visual_encoder.blocks.{layer}.attn.{b}" for b in biases]
            continue
        q, v = biases["q_bias"], biases["v_bias"]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out, {"dropped": sorted(dropped), "unmatched": sorted(unmatched)}


def mra_cir_to_lavis(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of [`lavis_to_mra_cir`]: an `MraCirModel` state dict in LAVIS key layout (no LM head), e.g. to
    score an MRA-CIR model with another project's LAVIS code.

    Raises `LavisConversionError` when a ViT layer's key bias is not zero (LAVIS' EVA ViT has none) or a key has no
    LAVIS counterpart.
    """
    rules = [(re.compile(src), dst) for src, dst in INVERSE_RENAMES]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(_VIT + r"self_attn\.qkv\.bias", key)
        if match:
            q, k, v = tensor.chunk(3)
            if k.abs().max() > 0:
                raise LavisConversionError(f"{key}: the key part of the bias is not zero; LAVIS' EVA ViT has none")
            out[f"visual_encoder.blocks.{match.group(1)}.attn.q_bias"] = q.clone()
            out[f"visual_encoder.blocks.{match.group(1)}.attn.v_bias"] = v.clone()
            continue
        for pattern, target in rules:
            if pattern.fullmatch(key):
                out[pattern.sub(target, key)] = tensor
                break
        else:
            raise LavisConversionError(f"{key}: no LAVIS counterpart")
    return out


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    vision_num_heads: int | None = None,
    qformer_num_heads: int | None = None,
    **overrides,
) -> MraCirConfig:
    """An `MraCirConfig` whose shapes are those of a converted state dict (see [`lavis_to_mra_cir`]).

    Widths, depths, image size, patch size, MLP sizes, vocabulary, query tokens, D and the cross-attention frequency
    are read from the tensors. Head counts are not in the weights: EVA ViT-g (width 1408) has 16 heads (head width 88),
    other widths default to width / 64, as does the Q-Former (BERT-base: 12).
    """
    sd = state_dict

    def shape(key: str) -> torch.Size:
        if key not in sd:
            raise LavisConversionError(
                f"cannot infer the config: the checkpoint has no {key!r} (a checkpoint saved without its frozen ViT "
                "needs --base-model, e.g. Salesforce/blip2-itm-vit-g, to take the config and those weights from)"
            )
        return sd[key].shape

    vision_width = shape("vision_model.embeddings.class_embedding")[-1]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    grid = math.isqrt(shape("vision_model.embeddings.position_embedding")[1] - 1)
    vision_layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers."))
    q_layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("qformer.encoder.layer.")})
    cross = sorted({int(k.split(".")[3]) for k in sd if ".crossattention." in k})
    frequency = cross[1] - cross[0] if len(cross) > 1 else len(q_layers)
    if not cross or cross != list(range(0, len(q_layers), frequency)):
        raise LavisConversionError(f"Q-Former cross-attention in layers {cross}: not every k-th layer from 0")
    word = shape("embeddings.word_embeddings.weight")
    hidden = word[1]
    config = dict(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_num_heads or (16 if vision_width == 1408 else max(1, vision_width // 64)),
            image_size=grid * patch,
            patch_size=patch,
            qkv_bias="vision_model.encoder.layers.0.self_attn.qkv.bias" in sd,
        ),
        qformer_config=dict(
            hidden_size=hidden,
            intermediate_size=shape("qformer.encoder.layer.0.intermediate_query.dense.weight")[0],
            num_hidden_layers=len(q_layers),
            num_attention_heads=qformer_num_heads or max(1, hidden // 64),
            vocab_size=word[0],
            max_position_embeddings=shape("embeddings.position_embeddings.weight")[0],
            cross_attention_frequency=frequency,
        ),
        num_query_tokens=shape("query_tokens")[1],
        image_text_hidden_size=shape("vision_projection.weight")[0],
    )
    config.update(overrides)
    return MraCirConfig(**config)


def convert_lavis_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    base_model: str | None = None,
    processor: str | None = None,
    ignore_keys: Sequence[str] = (),
    vision_num_heads: int | None = None,
    qformer_num_heads: int | None = None,
) -> dict[str, Any]:
    """Convert a LAVIS BLIP-2 checkpoint file into an `MraCirModel` folder (safetensors, config, card, processor).

    Args:
        checkpoint (`str` or `os.PathLike`): the `.pth` / `.pt` file (read with `weights_only=True`).
        output_dir (`str` or `os.PathLike`): where the model goes.
        base_model (`str`, *optional*): an `MraCirModel` folder or BLIP-2 ITM checkpoint (e.g.
            `Salesforce/blip2-itm-vit-g`) giving the config and every weight the checkpoint lacks (a checkpoint saved
            without its frozen ViT); without it the config is read from the tensor shapes and nothing may be missing
            but [`OPTIONAL`].
        processor (`str`, *optional*): where the processor comes from (default: `base_model`); LAVIS BLIP-2 uses
            the `bert-base-uncased` tokenizer with a `[DEC]` token and CLIP-normalised 224 px images, as
            `Salesforce/blip2-itm-vit-g`'s processor does. Without either, no processor is saved (the report says so).
        ignore_keys (`Sequence[str]`, defaults to `()`): more LAVIS keys to drop (regular expressions).
        vision_num_heads, qformer_num_heads (`int`, *optional*): head counts when no base model gives them.

    Returns:
        `dict`: the conversion report, also written to `<output_dir>/conversion.json`: `converted`, `dropped`,
        `defaulted` (optional keys kept at their initial values), `from_base_model` and `processor`.

    Raises:
        [`LavisConversionError`]: unmatched LAVIS keys, missing model keys, or shape mismatches, each named.
    """
    from . import MraCirModel

    lavis = load_lavis_state_dict(checkpoint)
    converted, report = lavis_to_mra_cir(lavis, ignore_keys)
    if report["unmatched"]:
        raise LavisConversionError(
            f"{checkpoint}: {len(report['unmatched'])} key(s) match no LAVIS BLIP-2 rule: {_listing(report['unmatched'])}."
            " Not an EVA-ViT BLIP-2 Q-Former checkpoint (a CLIP ViT-L variant?), or keys to drop on purpose: pass "
            "them to --ignore-keys (regular expressions), e.g. --ignore-keys prompt_tokens for SPRC"
        )
    if base_model:
        from .loading import load_model_and_processor

        model, base_processor = load_model_and_processor(base_model)
    else:
        model, base_processor = MraCirModel(infer_config(converted, vision_num_heads, qformer_num_heads)), None
    expected = model.state_dict()
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [
        f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in converted
        if k in expected and converted[k].shape != expected[k].shape
    ]
    if unexpected or mismatched:
        raise LavisConversionError(
            f"{checkpoint}: does not fit the model config: unexpected {_listing(unexpected)}; shape mismatches "
            f"{_listing(mismatched)}"
        )
    missing = sorted(set(expected) - set(converted))
    defaulted = [k for k in missing if k in OPTIONAL]
    from_base = [k for k in missing if k not in OPTIONAL] if base_model else []
    if not base_model and len(defaulted) < len(missing):
        absent = [k for k in missing if k not in OPTIONAL]
        raise LavisConversionError(
            f"{checkpoint}: lacks {len(absent)} weight(s) of the model: {_listing(absent)}. A checkpoint saved without "
            "its frozen ViT needs --base-model (e.g. Salesforce/blip2-itm-vit-g) to take them from"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=False)
    output = Path(output_dir)
    model.save_pretrained(output)
    processor_source = processor or (base_model if base_processor is not None else None)
    if processor_source:
        from .loading import load_processor

        (base_processor if processor is None else load_processor(processor)).save_pretrained(output)
    result = {
        "checkpoint": str(checkpoint),
        "converted": len(converted),
        "dropped": report["dropped"],
        "defaulted": defaulted,
        "from_base_model": {"source": base_model, "keys": len(from_base)} if base_model else None,
        "processor": processor_source,
    }
    (output / "conversion.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


__all__ = [
    "DROPPED",
    "INVERSE_RENAMES",
    "OPTIONAL",
    "RENAMES",
    "LavisConversionError",
    "convert_lavis_checkpoint",
    "infer_config",
    "lavis_to_mra_cir",
    "load_lavis_state_dict",
    "mra_cir_to_lavis",
]
