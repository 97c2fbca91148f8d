"""From images and texts to gallery rankings: the one encoding and ranking path of the project.

- [`encode_images`] embeds images in batches into `(N, Q, D)` token features (the gallery side, and what mining
  ranks). It serves feature extraction, the evaluators' galleries, the quickstart, `mra-cir search` and the app.
- [`encode_queries`] makes the query vectors of one ranking method (`QUERY_MODES`):

  - `"composed"`: the composed query of the reference image and the modification text (`get_composed_features`),
    `(B, D)`: the method;
  - `"image"`: the reference's image tokens `(B, Q, D)` (image-only baseline);
  - `"text"`: the text features `(B, D)` of the modification text alone (text-only baseline);
  - `"image_text_fusion"`: late fusion, `normalize(v_q + t)` for each normalised image token `v_q` of the reference
    and the normalised text feature `t`, `(B, Q, D)` (the "image + text" baseline of the zero-shot CIR literature,
    which sums the normalised image and text embeddings; with BLIP-2's Q image tokens the sum is taken per token
    and scored with the same max-sim as every other method).

- [`rank_gallery`] encodes the queries and searches a [`GalleryIndex`] (exact blocked top-k, max over token pairs).
- [`encode_vision_outputs`] runs the frozen ViT alone, in the same batches, for the caches of its outputs.

Example:

```python
>>> index = GalleryIndex(encode_images(model, processor, gallery_images), gallery_ids)
>>> scores, ids = rank_gallery(model, processor, index, [reference], ["make it red"], mode="composed", k=10)
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

QUERY_MODES = ("composed", "image", "text", "image_text_fusion")


def model_fingerprint(module: torch.nn.Module) -> str:
    """A cheap content hash of a module: its config, every tensor's name/shape/dtype, sum and a strided sample.

    Changes whenever training changes the weights; costs one pass of sums over the parameters. Used as the cache key
    of everything computed from a model (gallery features, ViT outputs, mined pairs).
    """
    h = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None:
        h.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if flat.numel():
                sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu()
                h.update(sample.numpy().tobytes())
                h.update(repr(float(flat.float().sum())).encode())
    return h.hexdigest()[:16]


def rgb(image):
    """A PIL image in RGB (`datasets`' `Image` feature decodes to PIL; `{"bytes"/"path"}` dicts are opened)."""
    from PIL import Image

    if isinstance(image, dict):
        import io

        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    return image.convert("RGB") if image.mode != "RGB" else image


class _Items(torch.utils.data.Dataset):
    """Row `i` of parallel sequences (a `datasets` column decodes its image only when the row is read)."""

    def __init__(self, *columns: Sequence):
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, i: int) -> tuple:
        return tuple(column[i] for column in self.columns)


def _batches(columns: tuple[Sequence, ...], batch_size: int, num_workers: int, collate, desc: str, show: bool):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    loader = torch.utils.data.DataLoader(
        _Items(*columns), batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    return tqdm(loader, desc=desc, unit="batch", disable=not show)


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    """The model's device and floating dtype (CPU / fp32 for a model-like object without parameters)."""
    try:
        parameter = next(model.parameters())
    except (AttributeError, StopIteration):
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


class _EvalMode:
    """`model.eval()` inside, the training flag restored after (dropout off while encoding); a model-like object
    without a training flag is used as it is."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.training = getattr(self.model, "training", None)
        if self.training:
            self.model.eval()

    def __exit__(self, *exc):
        if self.training:
            self.model.train(True)


@torch.no_grad()
def encode_vision_outputs(
    model,
    processor,
    images: Sequence,
    batch_size: int = 32,
    num_workers: int = 0,
    show_progress: bool = False,
    desc: str = "encoding images (ViT)",
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The frozen ViT's outputs `(N, 1 + patches, vision_hidden)` of `images`, in order, on the CPU: what the
    Q-Former cross-attends to, cached by the trainer and the evaluators while the ViT stays frozen.

    Arguments as in [`encode_images`]; `output_dtype` defaults to the model's (`torch.bfloat16` halves a cache).
    """
    device, dtype = _device_dtype(model.vision_model)

    def collate(rows):
        return processor(images=[rgb(image) for (image,) in rows], return_tensors="pt")["pixel_values"]

    chunks = []
    with _EvalMode(model):
        for pixel_values in _batches((images,), batch_size, num_workers, collate, desc, show_progress):
            outputs = model.get_vision_outputs(pixel_values.to(device=device, dtype=dtype))
            chunks.append(outputs.to(output_dtype or outputs.dtype).cpu())
    return torch.cat(chunks)


@torch.no_grad()
def encode_images(
    model,
    processor,
    images: Sequence,
    batch_size: int = 32,
    num_workers: int = 0,
    show_progress: bool = False,
    desc: str = "encoding images",
    output_dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """The `(N, Q, D)` token features of `images`, in order (`model.get_image_features`, on the CPU).

    Args:
        model ([`MraCirModel`]): used on its device and dtype, in eval mode (its training flag is restored).
        processor ([`MraCirProcessor`]): `processor(images=...)` makes the pixel values.
        images (`Sequence`): PIL images, `{"bytes"/"path"}` dicts, or a lazily decoding sequence (a `datasets`
            column or any object with `__len__` / `__getitem__`).
        batch_size (`int`, defaults to 32): images per forward pass.
        num_workers (`int`, defaults to 0): `DataLoader` workers decoding and preprocessing images.
        show_progress (`bool`, defaults to `False`), desc (`str`): the progress bar.
        output_dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): dtype of the result; `None` keeps the
            model's (bf16 features take half the memory of a large pool).
    """
    device, dtype = _device_dtype(model)

    def collate(rows):
        return processor(images=[rgb(image) for (image,) in rows], return_tensors="pt")["pixel_values"]

    chunks = []
    with _EvalMode(model):
        for pixel_values in _batches((images,), batch_size, num_workers, collate, desc, show_progress):
            chunks.append(
                model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype)).float().cpu()
            )
    if not chunks:
        return torch.empty(0, model.config.num_query_tokens, model.config.image_text_hidden_size)
    return torch.cat(chunks)


@torch.no_grad()
def encode_queries(
    model,
    processor,
    images: Sequence | None,
    texts: Sequence[str] | Sequence[Sequence[str]] | None,
    mode: str = "composed",
    batch_size: int = 32,
    num_workers: int = 0,
    image_features: torch.Tensor | None = None,
    show_progress: bool = False,
    desc: str = "encoding queries",
) -> torch.Tensor:
    """Query vectors of one ranking method (`QUERY_MODES`, see the module docstring), fp32 on the CPU.

    Args:
        images (`Sequence`, *optional*): the reference images (PIL images, dicts or a lazily decoding sequence);
            not needed by `"text"`, nor when `image_features` is given for `"image"`.
        texts (`Sequence[str]` or `Sequence[Sequence[str]]`, *optional*): one modification text per query, or
            several (their features are averaged and renormalised, e.g. FashionIQ's two caption orders); not needed
            by `"image"`.
        mode (`str`, defaults to `"composed"`): one of `QUERY_MODES`.
        batch_size (`int`, defaults to 32), num_workers (`int`, defaults to 0): as in [`encode_images`].
        image_features (`torch.Tensor` of shape `(B, Q, D)`, *optional*): the references' image tokens when they are
            already encoded (e.g. the reference is in the gallery): used by `"image"` and `"image_text_fusion"`
            instead of encoding the images again.

    Returns:
        `torch.Tensor`: `(B, D)` for `"composed"` and `"text"`, `(B, Q, D)` for `"image"` and
        `"image_text_fusion"`, L2-normalised.
    """
    if mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {mode!r}; choose from {QUERY_MODES}")
    needs_images = mode == "composed" or (mode in ("image", "image_text_fusion") and image_features is None)
    needs_texts = mode != "image"
    if needs_images and images is None:
        raise ValueError(f"query mode {mode!r} needs the reference images")
    if needs_texts and texts is None:
        raise ValueError(f"query mode {mode!r} needs the modification texts")
    if needs_texts:
        texts = [[t] if isinstance(t, str) else list(t) for t in texts]
        per_query = {len(t) for t in texts}
        if len(per_query) > 1 or 0 in per_query:
            raise ValueError(f"every query needs the same (non-zero) number of texts, got {sorted(per_query)}")
    count = len(texts) if needs_texts else (len(images) if needs_images else image_features.shape[0])
    if needs_images and len(images) != count:
        raise ValueError(f"got {len(images)} reference images for {count} queries")
    if image_features is not None and image_features.shape[0] != count:
        raise ValueError(f"got {image_features.shape[0]} image feature rows for {count} queries")

    if mode == "image":
        return (
            image_features.float().cpu()
            if image_features is not None
            else encode_images(model, processor, images, batch_size, num_workers, show_progress, desc)
        )
    if mode == "image_text_fusion":
        tokens = (
            image_features
            if image_features is not None
            else encode_images(model, processor, images, batch_size, num_workers, show_progress, desc)
        )
        text = encode_queries(model, processor, None, texts, "text", batch_size, num_workers)
        return F.normalize(F.normalize(tokens.float(), dim=-1) + text[:, None, :], dim=-1)

    device, dtype = _device_dtype(model)
    n_texts = len(texts[0])
    columns = (texts,) if mode == "text" else (images, texts)

    def collate(rows):
        flat = [t for row in rows for t in row[-1]]
        if mode == "text":
            return processor(text=flat, return_tensors="pt")
        return processor(images=[rgb(row[0]) for row in rows], text=flat, return_tensors="pt")

    chunks = []
    with _EvalMode(model):
        for inputs in _batches(columns, batch_size, num_workers, collate, desc, show_progress):
            input_ids, attention_mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
            if mode == "text":
                feats = model.get_text_features(input_ids, attention_mask)
            else:
                vision = model.get_vision_outputs(inputs["pixel_values"].to(device=device, dtype=dtype))
                if n_texts > 1:
                    vision = vision.repeat_interleave(n_texts, dim=0)
                feats = model.get_composed_features(
                    input_ids=input_ids, attention_mask=attention_mask, vision_embeds=vision
                )
            feats = feats.float()
            if n_texts > 1:
                feats = F.normalize(feats.view(-1, n_texts, feats.shape[-1]).mean(dim=1), dim=-1)
            chunks.append(feats.cpu())
    return torch.cat(chunks)


class Ranking(NamedTuple):
    """What [`rank_gallery`] returns: the ranked ids, their scores and the query vectors that ranked them."""

    ids: list[list[str]]
    scores: torch.Tensor
    queries: torch.Tensor


def rank_gallery(
    model,
    processor,
    index,
    images: Sequence | None,
    texts: Sequence[str] | Sequence[Sequence[str]] | None,
    mode: str = "composed",
    k: int = 50,
    exclude: Sequence[str | None] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    image_features: torch.Tensor | None = None,
    show_progress: bool = False,
    desc: str = "encoding queries",
) -> Ranking:
    """Rank `index` for every query: [`encode_queries`] then [`GalleryIndex.search`] on the model's device.

    Args:
        index ([`GalleryIndex`], or any object with its `search` and `ids`): the gallery, encoded by the same model
            ([`encode_images`]).
        exclude (`Sequence[str | None]`, *optional*): an id removed from each query's ranking (CIRR deletes the
            reference).
        k (`int`, defaults to 50): ranking length (capped by the gallery size, minus one with exclusions).
        Other arguments: see [`encode_queries`].

    Returns:
        [`Ranking`]: `ids` (the ranked gallery ids per query), `scores` (`(B, k')` fp32, descending) and `queries`
        (the query vectors, on the CPU).
    """
    queries = encode_queries(
        model, processor, images, texts, mode, batch_size, num_workers, image_features, show_progress, desc
    )
    device, _ = _device_dtype(model)
    scores, ids = index.search(queries.to(device), k=k, exclude=list(exclude) if exclude is not None else None)
    return Ranking(ids, scores, queries)


__all__ = [
    "QUERY_MODES",
    "Ranking",
    "encode_images",
    "encode_queries",
    "encode_vision_outputs",
    "model_fingerprint",
    "rank_gallery",
    "rgb",
]
