"""A gallery index: image token features with their ids, searched exactly with composed queries.

One ranking code path serves evaluation, `mra-cir search` and the demo: [`GalleryIndex.search`] calls
[`~mra_cir.retrieval.similarity.topk_token_similarity`] (blocked exact top-k; ties -> lower gallery index first).

On disk (`save` / `load`): `features.safetensors` (tensor `features`, `(M, Q, D)`), `ids.json` (list of M strings)
and `gallery_index.json` (reduction, optional model path, shape).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .similarity import REDUCTIONS, topk_token_similarity

FEATURES_FILE = "features.safetensors"
IDS_FILE = "ids.json"
CONFIG_FILE = "gallery_index.json"


class GalleryIndex:
    """Exact token-level search over a gallery of images.

    Args:
        features (`torch.Tensor` of shape `(M, Q, D)`): L2-normalised image tokens (`get_image_features`).
        ids (`list[str]`): the M image ids, unique.
        reduce (`str`, defaults to `"max"`): token reduction (`"max"`: maximum cosine over token pairs, the model's
            max-sim logit for a composed query; `"mean_max"`).
        model_path (`str`, *optional*): the model that produced the features (recorded for `mra-cir search`).

    Example:

    ```python
    >>> index = GalleryIndex(model.get_image_features(pixel_values=pixels), ids=["a.jpg", "b.jpg"])
    >>> scores, ids = index.search(model.get_composed_features(**query_inputs), k=1)
    >>> index.save("gallery/"); GalleryIndex.load("gallery/").ids
    ['a.jpg', 'b.jpg']
    ```
    """

    def __init__(
        self, features: torch.Tensor, ids: list[str], reduce: str = "max", model_path: str | None = None
    ) -> None:
        if not isinstance(features, torch.Tensor) or features.dim() not in (2, 3):
            raise ValueError(
                f"features must be a tensor of shape (M, Q, D) or (M, D), got {getattr(features, 'shape', features)}"
            )
        if features.dim() == 2:
            features = features.unsqueeze(1)
        ids = [str(i) for i in ids]
        if len(ids) != features.shape[0]:
            raise ValueError(f"got {features.shape[0]} feature rows but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"ids must be unique; {dup!r} appears more than once")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        self.features = features.detach()
        self.ids = ids
        self.reduce = reduce
        self.model_path = model_path
        self._position = {id_: i for i, id_ in enumerate(ids)}

    @classmethod
    def from_images(
        cls,
        model,
        processor,
        images,
        model_path: str | None = None,
        batch_size: int = 32,
        reduce: str = "max",
        show_progress: bool = True,
    ) -> GalleryIndex:
        """Embed `images` (a folder, a list of paths or a `datasets.Dataset` with an `image` column) and index them:
        the one images-to-index path of `mra-cir search --images`, the app and Python users.

        Duplicates (same bytes) are embedded once and unreadable images skipped ([`extract_image_features`]); ids
        are the paths relative to the folder. `model_path` is recorded so that a saved index names its model.

        Raises:
            `ValueError`: no readable image (naming how many were skipped).
        """
        from .image_features import extract_image_features

        features = extract_image_features(model, processor, images, batch_size=batch_size, show_progress=show_progress)
        if not len(features):
            raise ValueError(f"{images}: no readable image to index ({len(features.skipped)} skipped)")
        return cls.from_image_features(features, reduce=reduce, model_path=model_path)

    @classmethod
    def from_image_features(cls, image_features, reduce: str = "max", model_path: str | None = None) -> GalleryIndex:
        """Build from an [`~mra_cir.retrieval.image_features.ImageFeatures`] (its `features` and `ids`)."""
        return cls(image_features.features, image_features.ids, reduce=reduce, model_path=model_path)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._position

    def __repr__(self) -> str:
        m, q, d = self.features.shape
        return f"GalleryIndex(size={m}, tokens={q}, dim={d}, reduce={self.reduce!r}, dtype={self.features.dtype})"

    def index_of(self, id_: str) -> int:
        """Position of an id in the gallery (`KeyError` naming the id if absent)."""
        try:
            return self._position[id_]
        except KeyError:
            raise KeyError(f"id {id_!r} is not in the gallery index") from None

    def score_candidates(self, queries: torch.Tensor, candidates: list[list[str]]) -> list[list[tuple[str, float]]]:
        """Each query's own candidate ids (e.g. CIRR's image set), ranked by the same similarity as [`search`].

        Args:
            queries (`torch.Tensor` of shape `(B, D)` or `(B, Q, D)`): query vectors.
            candidates (`list[list[str]]` of length B): ids to rank per query (ids absent from the gallery are
                dropped).

        Returns:
            `list[list[tuple[str, float]]]`: per query, `(id, score)` by decreasing score; equal scores keep the
            candidates' order.
        """
        if len(candidates) != queries.shape[0]:
            raise ValueError(f"got {len(candidates)} candidate lists for {queries.shape[0]} queries")
        out = []
        for query, ids in zip(queries, candidates):
            ids = [i for i in ids if i in self._position]
            if not ids:
                out.append([])
                continue
            keys = self.features[[self._position[i] for i in ids]]
            scores, order = topk_token_similarity(query[None].detach(), keys, len(ids), reduce=self.reduce)
            out.append([(ids[i], float(v)) for i, v in zip(order[0].tolist(), scores[0].tolist())])
        return out

    def search(
        self, queries: torch.Tensor, k: int, exclude: list[str | None] | None = None
    ) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-k gallery ids for each query.

        Args:
            queries (`torch.Tensor` of shape `(B, D)` or `(B, Q, D)`): L2-normalised composed-query vectors (or image
                tokens). Computed on the queries' device; the gallery moves block by block.
            k (`int`): results per query; capped at the gallery size (minus one where a row excludes an id).
            exclude (`list[str | None]` of length B, *optional*): `exclude[i]` is removed from row i's ranking (e.g.
                the reference image, as CIRR's protocol requires); ids absent from the gallery are ignored.

        Returns:
            `(scores, ids)`: fp32 `torch.Tensor` of shape `(B, k')` descending, with `k' = min(k, len(index) -
            any_exclusion)`, and the matching ids (`list[list[str]]`). Equal scores: lower gallery position first.
        """
        if queries.dim() not in (2, 3):
            raise ValueError(f"queries must have shape (B, D) or (B, Q, D), got {tuple(queries.shape)}")
        b = queries.shape[0]
        if exclude is not None and len(exclude) != b:
            raise ValueError(f"exclude must have one entry per query ({b}), got {len(exclude)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        excluded = [self._position.get(e, -1) if e is not None else -1 for e in (exclude or [None] * b)]
        any_excluded = any(e >= 0 for e in excluded)
        k_out = min(k, len(self) - int(any_excluded))
        if k_out < 1:
            raise ValueError(f"the gallery has {len(self)} images: nothing left to rank")
        k_search = min(k_out + int(any_excluded), len(self))
        scores, indices = topk_token_similarity(queries.detach(), self.features, k_search, reduce=self.reduce)
        scores, indices = scores.cpu(), indices.cpu()
        if any_excluded:
            keep = indices != torch.tensor(excluded)[:, None]
            # rows without their excluded id in the top-k_search drop the last entry instead
            keep &= keep.long().cumsum(dim=1) <= k_out
            scores = scores[keep].view(b, k_out)
            indices = indices[keep].view(b, k_out)
        return scores, [[self.ids[i] for i in row] for row in indices.tolist()]

    def save(self, directory: str | os.PathLike) -> None:
        """Write `features.safetensors`, `ids.json` and `gallery_index.json` to `directory` (created if needed)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"features": self.features.contiguous().cpu()}, str(directory / FEATURES_FILE))
        (directory / IDS_FILE).write_text(json.dumps(self.ids))
        config = {
            "reduce": self.reduce,
            "model_path": self.model_path,
            "num_images": len(self),
            "num_tokens": self.features.shape[1],
            "dim": self.features.shape[2],
            "dtype": str(self.features.dtype).removeprefix("torch."),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> GalleryIndex:
        """Load an index written by [`GalleryIndex.save`] (optionally onto `device`)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (FEATURES_FILE, IDS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: not a gallery index directory")
        features = load_file(str(directory / FEATURES_FILE), device=str(device or "cpu"))
        if "features" not in features:
            raise ValueError(f"{directory / FEATURES_FILE} has no 'features' tensor (found {sorted(features)})")
        ids = json.loads((directory / IDS_FILE).read_text())
        config = json.loads((directory / CONFIG_FILE).read_text()) if (directory / CONFIG_FILE).is_file() else {}
        return cls(features["features"], ids, reduce=config.get("reduce", "max"), model_path=config.get("model_path"))
