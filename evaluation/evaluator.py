"""The evaluator base class shared by FashionIQ, CIRR and CIRCO (each benchmark module adds a small subclass).

[`CirEvaluator`] does the work common to all three: load the split with the benchmark's loader, encode the gallery
([`~mra_cir.retrieval.encoding.encode_images`]; features cached on disk under a key made of the model's
fingerprint, the image processor's settings and the image list), rank it for every query through the one ranking
path ([`~mra_cir.retrieval.encoding.rank_gallery`]: composed query, or a baseline `query_mode`), keep the
top-50 ranking of every query, and score it with the benchmark's protocol. A subclass states its benchmark, its
loader, its primary metric, which id is excluded from a query's ranking, and how its protocol scores the rankings.

The trainer takes any evaluator (`MraCirTrainer(cir_evaluators=[...])`): it calls `evaluator(model, processor)`.

Under `torch.distributed` (`accelerate launch`, `torchrun`; `supports_distributed = True`) every process calls the
evaluator: each encodes its contiguous shard of the gallery and of the queries with `DataLoader` workers, the rows are
gathered once ([`~mra_cir.retrieval.distributed.gather_rows`]) and every process ranks and scores the same numbers.

What is cached on disk, and why (`cache_dir`):
- `cache_features=True`: the final `(M, Q, D)` gallery features, keyed by the whole model's fingerprint. Right for
  `mra-cir evaluate` (the same weights evaluated again); useless during training, where the Q-Former, and with it every
  gallery feature, changes at each step (so the trainer turns it off).
- `cache_vision_outputs=True`: the frozen ViT's outputs of the gallery `(M, 1 + patches, vision_hidden)`, keyed by the
  ViT's own fingerprint only, in chunks of `vision_chunk_rows` images (one file per chunk, so any number of processes
  reuses them). Valid as long as the ViT is frozen (the paper's setting): each later evaluation runs only the Q-Former
  and the projection over them (the ViT is about 90 % of BLIP-2's image-encoding FLOPs). Size: `257 x 1408` values per
  ViT-g image, 0.7 MB in bfloat16: 11 GB for FashionIQ's three val galleries, 1.6 GB for CIRR val, 89 GB for CIRCO's
  123k COCO images.

Example:

```python
>>> from mra_cir.evaluation import CirrEvaluator
>>> evaluator = CirrEvaluator("/data/cirr_dataset", split="val", batch_size=64, cache_dir="feature_cache")
>>> metrics = evaluator(model, processor)  # {"R@1": ..., "R_subset@3": ...} in percent
>>> evaluator.save_rankings("out/")  # files `mra-cir evaluate-rankings` reads back
```
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from mra_cir.retrieval.distributed import gather_rows, process_state, shard_bounds
from mra_cir.retrieval.encoding import (
    QUERY_MODES,
    Ranking,
    encode_images,
    encode_queries,
    rank_gallery,
)
from mra_cir.retrieval.gallery_index import GalleryIndex

from .benchmark import CirBenchmarkLoader, CirSplit
from .gallery_cache import VISION_CACHE_DTYPES, atomic_save, features_from_vision_cache, gallery_key

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mra_cir" / "gallery_features"


class CirEvaluator:
    """Shared base of the benchmark evaluators.

    Args:
        data_root (`str` or `os.PathLike`): the benchmark's folder (official layout; see the benchmark's loader).
        split (`str`, defaults to `"val"`): `"val"` is scored; `"test"` only ranks (write the submission files with
            [`~CirEvaluator.write_submission`]).
        batch_size (`int`, defaults to 32): images (and queries) per forward pass.
        top_k (`int`, defaults to 50): ranking length kept per query.
        cache_dir (`str`, *optional*): gallery feature cache (default `~/.cache/mra_cir/gallery_features`; `""`
            disables it).
        allow_missing (`bool`, defaults to `False`): evaluate on the images present instead of raising on missing
            ones (reported in `self.report`; such numbers are not comparable with published ones).
        max_queries (`int`, *optional*): evaluate only the first N queries (of each FashionIQ category).
        annotations_dir, image_root (`str`, *optional*): override the official layout.
        num_workers (`int`, defaults to 0): `DataLoader` workers decoding images.
        show_progress (`bool`, defaults to `True`): tqdm progress bars.
        query_mode (`str`, defaults to `"composed"`): how queries are made (`QUERY_MODES`: the composed query, or
            the image-only, text-only and late-fusion baselines), scored by the same protocol.
        cache_features (`bool`, defaults to `True`): cache the final gallery features (keyed by the model).
        cache_vision_outputs (`bool`, defaults to `False`): cache the gallery's ViT outputs (keyed by the ViT only;
            valid while the ViT is frozen; see the module docstring for the sizes).
        vision_cache_dtype (`str`, defaults to `"bfloat16"`): storage dtype of the cached ViT outputs.
        vision_chunk_rows (`int`, defaults to 1024): images per ViT-output cache file (and shard alignment).
        distributed (`bool`, *optional*): shard the encoding over the processes of an initialised process group
            (default: whenever one with more than one process is initialised).
    """

    #: every process may call it under torch.distributed (the trainer then runs it on all ranks)
    supports_distributed: ClassVar[bool] = True

    benchmark: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""
    loader_class: ClassVar[type[CirBenchmarkLoader]] = CirBenchmarkLoader

    def __init__(
        self,
        data_root: str | os.PathLike | None = None,
        split: str = "val",
        batch_size: int = 32,
        top_k: int = 50,
        cache_dir: str | os.PathLike | None = None,
        allow_missing: bool = False,
        max_queries: int | None = None,
        annotations_dir: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
        num_workers: int = 0,
        show_progress: bool = True,
        query_mode: str = "composed",
        cache_features: bool = True,
        cache_vision_outputs: bool = False,
        vision_cache_dtype: str = "bfloat16",
        vision_chunk_rows: int = 1024,
        distributed: bool | None = None,
    ):
        if query_mode not in QUERY_MODES:
            raise ValueError(f"unknown query_mode {query_mode!r}; choose from {QUERY_MODES}")
        self.loader = self.loader_class(data_root=data_root, annotations_dir=annotations_dir, image_root=image_root)
        self.split = self.loader.normalize_split(split)
        self.batch_size = batch_size
        self.top_k = top_k
        self.cache_dir = None if cache_dir == "" else Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.allow_missing = allow_missing
        self.max_queries = max_queries
        self.num_workers = num_workers
        self.show_progress = show_progress
        self.query_mode = query_mode
        self.cache_features = cache_features
        self.cache_vision_outputs = cache_vision_outputs
        if vision_cache_dtype not in VISION_CACHE_DTYPES:
            raise ValueError(f"vision_cache_dtype must be one of {VISION_CACHE_DTYPES}, got {vision_cache_dtype!r}")
        self.vision_cache_dtype = vision_cache_dtype
        self.vision_chunk_rows = vision_chunk_rows
        self.distributed = distributed
        self.splits: dict[str, CirSplit] = {}
        self.rankings: dict[str, dict[str, list[str]]] = {}  # part -> query id -> top-k gallery ids
        self.subset_rankings: dict[str, dict[str, list[str]]] = {}  # CIRR: part -> query id -> members ranked
        self.report: dict[str, Any] = {}

    # -------------------------------------------------------------------------------------- per benchmark
    @property
    def parts(self) -> Sequence[str | None]:
        """The loader subsets evaluated (FashionIQ: the categories; others: one part, `None`)."""
        return (None,)

    def exclusions(self, split: CirSplit) -> list[str | None]:
        """The id removed from each query's ranking (default: none; the reference stays in the gallery)."""
        return [None] * len(split.queries)

    def query_texts(self, split: CirSplit) -> list[list[str]]:
        """One or more texts per query; their features are averaged (default: `text` only)."""
        return [[t] for t in split.queries["text"]]

    def score(self) -> dict[str, float]:
        """The benchmark's metrics (percent) from `self.rankings`."""
        raise NotImplementedError

    def after_ranking(self, key: str, split: CirSplit, queries: torch.Tensor, index: GalleryIndex) -> None:
        """Hook run after a part is ranked, with the query vectors and the gallery (CIRR: subset rankings)."""

    def rankings_files(self) -> dict[str, Any]:
        """File name -> JSON content of the kept rankings."""
        raise NotImplementedError

    def write_submission(self, output_dir: str | os.PathLike) -> list[Path]:
        """Validate and write the test-server files of the evaluated split."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- shared logic
    def _key(self, part: str | None) -> str:
        return part or self.benchmark

    def _process_state(self) -> tuple[int, int]:
        rank, world = process_state()
        return (rank, world) if self.distributed is not False else (0, 1)

    def _cache_path(self, model, processor, split: CirSplit) -> Path | None:
        if self.cache_dir is None or not self.cache_features:
            return None
        key = gallery_key(model, processor, split.gallery)
        return self.cache_dir / f"{split.name}-{split.split}-{key}.safetensors"

    def _vision_cache_dir(self, model, processor, split: CirSplit) -> Path | None:
        if self.cache_dir is None or not self.cache_vision_outputs:
            return None
        key = gallery_key(model.vision_model, processor, split.gallery)
        return self.cache_dir / "vision_outputs" / f"{split.name}-{split.split}-{key}-{self.vision_cache_dtype}"

    def encode_gallery(self, model, processor, split: CirSplit) -> torch.Tensor:
        """`(M, Q, D)` image features of the gallery, in `split.gallery` order (read from / written to the cache).

        Under `torch.distributed` each process encodes its shard and the shards are gathered once: every process
        returns the whole gallery.
        """
        from safetensors.torch import load_file

        path = self._cache_path(model, processor, split)
        if path is not None and path.is_file():
            logger.info("gallery features from cache %s", path)
            return load_file(path)["features"]
        rank, world = self._process_state()
        total = len(split.gallery)
        world = world if total >= world else 1  # fewer images than processes: every process encodes them all
        vision_dir = self._vision_cache_dir(model, processor, split)
        # shards aligned to the ViT-output chunks, so that the chunk files do not depend on the number of processes
        align = self.vision_chunk_rows if vision_dir is not None else 1
        start, stop = shard_bounds(total, world, rank if world > 1 else 0, align=align)
        if start == stop:  # a process left without rows (a small gallery in large chunks)
            local = torch.empty(0, model.config.num_query_tokens, model.config.image_text_hidden_size)
        elif vision_dir is not None:
            local = features_from_vision_cache(
                model,
                processor,
                split.gallery,
                start,
                stop,
                vision_dir,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                dtype=self.vision_cache_dtype,
                chunk_rows=self.vision_chunk_rows,
            )
        else:
            local = encode_images(
                model,
                processor,
                split.gallery.select(range(start, stop))["image"],
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                show_progress=self.show_progress and rank == 0,
                desc=f"{split.name} gallery" + (f" (shard {rank + 1}/{world})" if world > 1 else ""),
            )
        features = gather_rows(local) if world > 1 else local
        if path is not None and rank == 0:
            atomic_save({"features": features.contiguous()}, path)
        return features

    def rank(self, model, processor, split: CirSplit, index: GalleryIndex) -> Ranking:
        """Rank the gallery for every query of `split` through the one ranking path (`rank_gallery`).

        Image-side baselines take the reference's tokens from the gallery when every reference is in it.
        """
        references = list(split.queries["reference_id"])
        image_features = None
        if self.query_mode in ("image", "image_text_fusion") and all(r in index for r in references):
            image_features = index.features[[index.index_of(r) for r in references]]
        rank, world = self._process_state()
        if world > 1 and len(references) >= world:
            return self._rank_sharded(model, processor, split, index, image_features, rank, world)
        return rank_gallery(
            model,
            processor,
            index,
            split.queries["reference_image"],
            self.query_texts(split) if self.query_mode != "image" else None,
            self.query_mode,
            k=self.top_k,
            exclude=self.exclusions(split),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            image_features=image_features,
            show_progress=self.show_progress,
            desc=f"{split.name} queries",
        )

    def _rank_sharded(self, model, processor, split, index, image_features, rank: int, world: int) -> Ranking:
        """[`rank`] under torch.distributed: this process encodes its shard of the queries, the query vectors are
        gathered, and every process searches the whole gallery for every query (the search is cheap next to encoding)."""
        start, stop = shard_bounds(len(split.queries), world, rank)
        texts = self.query_texts(split)[start:stop] if self.query_mode != "image" else None
        if start == stop:  # more processes than query blocks: this one has none, but takes part in the gather
            size = (model.config.image_text_hidden_size,)
            shape = (
                (0, *size) if self.query_mode in ("composed", "text") else (0, model.config.num_query_tokens, *size)
            )
            queries = gather_rows(torch.empty(shape))
        else:
            queries = gather_rows(
                self._encode_query_shard(model, processor, split, texts, image_features, start, stop)
            )
        device = next(model.parameters()).device
        scores, ids = index.search(queries.to(device), k=self.top_k, exclude=list(self.exclusions(split)))
        return Ranking(ids, scores, queries)

    def _encode_query_shard(self, model, processor, split, texts, image_features, start: int, stop: int):
        rank, world = self._process_state()
        return encode_queries(
            model,
            processor,
            split.queries.select(range(start, stop))["reference_image"],
            texts,
            self.query_mode,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            image_features=image_features[start:stop] if image_features is not None else None,
            show_progress=self.show_progress and rank == 0,
            desc=f"{split.name} queries (shard {rank + 1}/{world})",
        )

    def __call__(self, model, processor=None) -> dict[str, float]:
        """Rank every query of the split; return the metrics in percent (empty for a test split).

        Args:
            model ([`MraCirModel`]): any model with `get_image_features`, `get_vision_outputs`,
                `get_text_features` and `get_composed_features`.
            processor ([`MraCirProcessor`], *optional*): default: loaded from `model.name_or_path`.
        """
        if processor is None:
            processor = _load_processor(model)
        was_training = model.training
        model.eval()
        self.rankings, self.subset_rankings, self.splits = {}, {}, {}
        try:
            for part in self.parts:
                split = self.loader.load(
                    self.split, subset=part, allow_missing=self.allow_missing, max_queries=self.max_queries
                )
                key = self._key(part)
                self.splits[key] = split
                index = GalleryIndex(self.encode_gallery(model, processor, split), list(split.gallery["image_id"]))
                ranking = self.rank(model, processor, split, index)
                self.rankings[key] = dict(zip(split.queries["query_id"], ranking.ids))
                self.after_ranking(key, split, ranking.queries, index)
        finally:
            model.train(was_training)
        self.report = {self._key(p): self.splits[self._key(p)].report() for p in self.parts}
        has_truth = all(all(t for t in s.queries["target_ids"]) for s in self.splits.values())
        return self.score() if has_truth else {}

    @property
    def complete(self) -> bool:
        """Whether every query and image of the official split was evaluated."""
        return bool(self.splits) and all(s.complete for s in self.splits.values()) and self.max_queries is None

    def rows(self, key: str) -> list[dict]:
        """The query rows of an evaluated part (`query_id`, `reference_id`, `target_ids`, `members`, ...)."""
        return self.splits[key].queries.remove_columns("reference_image").to_list()

    def save_rankings(self, output_dir: str | os.PathLike) -> list[Path]:
        """Write the rankings in the formats `mra-cir evaluate-rankings` reads (see [`rankings_files`])."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, data in self.rankings_files().items():
            path = out / name
            path.write_text(json.dumps(data))
            paths.append(path)
        return paths


def _load_processor(model):
    from transformers import AutoProcessor

    source = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    if not source:
        raise ValueError("no processor given and the model has no name_or_path to load one from")
    return AutoProcessor.from_pretrained(source)


__all__ = ["DEFAULT_CACHE_DIR", "CirEvaluator"]
