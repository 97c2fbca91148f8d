"""A cache of frozen ViT outputs keyed by image id.

The ViT is the most expensive part of the model (BLIP-2 ViT-g: 39 layers, 1408 wide) and, frozen, never changes:
its output for an image can be computed once and reused at every epoch. [`VitOutputCache.fill`] runs the ViT over
every reference and target image of a triplet dataset (deduplicated by id, batched, with a progress bar), and
[`MraCirCollator`] then passes `reference_vision_embeds` / `target_vision_embeds` to the model instead of pixels.

Memory: one image is `(1 + patches) x vision_hidden` values (ViT-g at 224 px: 257 x 1408, 0.72 MB in bfloat16), so a
cache of 100k images needs ~72 GB: use `dtype=torch.bfloat16` and a `cache_dir` on fast disk for large sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from mra_cir.retrieval.encoding import encode_vision_outputs, model_fingerprint

CACHE_FILE = "vit_outputs.safetensors"
META_FILE = "vit_outputs.json"


def vision_fingerprint(model) -> str:
    """A short hash of the vision tower's config and weights (a cache made with other weights is never reused)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return model_fingerprint(base.vision_model)


class VitOutputCache:
    r"""
    Frozen ViT outputs `(1 + patches, vision_hidden)` per image id, stacked in one CPU tensor.

    Args:
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): storage dtype (bfloat16 halves the memory;
            the Q-Former then sees the ViT output rounded to bfloat16).

    Example:

    ```python
    >>> cache = VitOutputCache()
    >>> cache.fill(model, processor, train_dataset)            # every reference and target image, once
    >>> embeds = cache.get(["img_1", "img_7"])                 # (2, 1 + patches, vision_hidden)
    >>> collator = MraCirCollator(processor, vit_cache=cache)  # feeds *_vision_embeds instead of pixels
    ```
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self._index: dict[str, int] = {}
        self._chunks: list[torch.Tensor] = []
        self._data: torch.Tensor | None = None
        self.fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._index

    def contains_all(self, ids: Iterable) -> bool:
        return all(str(i) in self._index for i in ids)

    @property
    def data(self) -> torch.Tensor:
        """All cached outputs `(N, 1 + patches, vision_hidden)`, in insertion order."""
        if self._chunks:
            parts = ([self._data] if self._data is not None else []) + self._chunks
            self._data, self._chunks = torch.cat(parts, dim=0), []
        if self._data is None:
            raise ValueError("the ViT-output cache is empty")
        return self._data

    def add(self, ids: Sequence, embeds: torch.Tensor) -> None:
        """Store `embeds` (`(len(ids), P, H)`) under `ids` (ids already present are skipped)."""
        if embeds.shape[0] != len(ids):
            raise ValueError(f"got {len(ids)} ids for {embeds.shape[0]} ViT outputs")
        keep = [i for i, image_id in enumerate(ids) if str(image_id) not in self._index]
        if not keep:
            return
        start = len(self._index)
        for offset, i in enumerate(keep):
            self._index[str(ids[i])] = start + offset
        self._chunks.append(embeds[keep].detach().to("cpu", self.dtype))

    def get(self, ids: Sequence, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """The cached outputs of `ids`, `(len(ids), P, H)`; raises `KeyError` naming the first missing id."""
        rows = []
        for image_id in ids:
            try:
                rows.append(self._index[str(image_id)])
            except KeyError:
                raise KeyError(f"image id {image_id!r} is not in the ViT-output cache ({len(self)} images)") from None
        out = self.data[torch.tensor(rows, dtype=torch.long)]
        return out.to(device=device or out.device, dtype=dtype or out.dtype)

    @torch.no_grad()
    def fill(
        self,
        model,
        processor,
        dataset,
        image_columns: Sequence[tuple[str, str]] = (
            ("reference_image", "reference_id"),
            ("target_image", "target_id"),
        ),
        batch_size: int = 64,
        device: torch.device | str | None = None,
        show_progress: bool = True,
    ) -> VitOutputCache:
        """Run the frozen ViT over every image of `dataset` not yet cached (deduplicated by id).

        Args:
            model ([`MraCirModel`] or a peft model around one): provides `get_vision_outputs`.
            processor ([`MraCirProcessor`]): its image processor makes the pixel values.
            dataset (`datasets.Dataset`): triplet rows; `image_columns` pairs each image column with its id column.
            batch_size (`int`, defaults to 64): images per ViT forward.
            device (*optional*): ignored; the ViT runs where the model is.
        """
        base = getattr(model, "get_base_model", lambda: model)()
        fingerprint = vision_fingerprint(base)
        if self.fingerprint is not None and self.fingerprint != fingerprint and len(self):
            raise ValueError("this ViT-output cache was made with other vision weights; use a new cache")
        self.fingerprint = fingerprint
        for image_col, id_col in image_columns:
            for col in (image_col, id_col):
                if col not in dataset.column_names:
                    raise ValueError(f"dataset has no column {col!r} (columns: {dataset.column_names})")
        # first row of each id not cached yet, in dataset order
        todo: dict[str, tuple[str, int]] = {}
        for image_col, id_col in image_columns:
            for row, image_id in enumerate(dataset[id_col]):
                key = str(image_id)
                if key not in self._index and key not in todo:
                    todo[key] = (image_col, row)
        if not todo:
            return self
        items = list(todo.items())
        columns = {col: dataset.select_columns([col]) for col, _ in image_columns}
        images = _TodoImages(items, columns)
        embeds = encode_vision_outputs(
            base, processor, images, batch_size, show_progress=show_progress, desc="caching ViT outputs"
        )
        self.add([image_id for image_id, _ in items], embeds)
        return self

    # ------------------------------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write `vit_outputs.safetensors` + `vit_outputs.json` (ids, fingerprint) to `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"vit_outputs": self.data.contiguous()}, str(directory / CACHE_FILE))
        ids = sorted(self._index, key=self._index.__getitem__)
        meta = {"ids": ids, "fingerprint": self.fingerprint, "dtype": str(self.dtype).replace("torch.", "")}
        (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, model=None) -> VitOutputCache:
        """Read a cache written by [`save`]; with `model`, refuse one made with other vision weights."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no ViT-output cache in {directory} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if model is not None and meta.get("fingerprint") != vision_fingerprint(model):
            raise ValueError(f"the ViT-output cache in {directory} was made with other vision weights")
        data = load_file(str(directory / CACHE_FILE))["vit_outputs"]
        cache = cls(dtype=data.dtype)
        cache._data = data
        cache._index = {image_id: i for i, image_id in enumerate(meta["ids"])}
        cache.fingerprint = meta.get("fingerprint")
        if len(cache._index) != data.shape[0]:
            raise ValueError(f"{directory / META_FILE} lists {len(cache._index)} ids for {data.shape[0]} outputs")
        return cache


class _TodoImages:
    """The images of `(id, (column, row))` items, decoded when read (a lazily decoding sequence)."""

    def __init__(self, items: list, columns: dict):
        self.items, self.columns = items, columns

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        _, (column, row) = self.items[i]
        return self.columns[column][row][column]


__all__ = ["VitOutputCache", "vision_fingerprint"]
