"""Zero-shot evaluators for FashionIQ, CIRR and CIRCO: one shared base, one small subclass per benchmark.

[`CirEvaluator`] does the work common to all three: load the split ([`dataset_builders.cir_benchmarks`]), encode the
gallery in batches (progress bar; features cached on disk under a key made of the model's fingerprint, the image
processor's settings and the image list), encode the composed queries, rank the gallery with the token-level max-sim
([`modeling_mra_cir.gallery_index.GalleryIndex`]), keep the top-50 ranking of every query, and score it with the
benchmark's protocol ([`trainers.cir_metrics`]). A subclass states its benchmark, its primary metric, which id is
excluded from a query's ranking, and how its protocol scores the rankings.

Example:

```python
>>> from trainers.evaluators import CirrEvaluator
>>> evaluator = CirrEvaluator("/data/cirr_dataset", split="val", batch_size=64, cache_dir="feature_cache")
>>> metrics = evaluator(model, processor)  # {"R@1": ..., "R_subset@3": ...} in percent
>>> evaluator.save_rankings("out/")  # files `mra-cir evaluate-rankings` reads back
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from dataset_builders.cir_benchmarks import (
    FASHIONIQ_CATEGORIES,
    CirSplit,
    get_loader,
    join_fashioniq_captions,
)
from trainers import cir_metrics, submissions

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mra_cir" / "gallery_features"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A cheap content hash of a model: its config, every parameter's name/shape/dtype, sum and a strided sample.

    Changes whenever training changes the weights; costs one pass of sums over the parameters.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if flat.numel():
                sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu()
                h.update(sample.numpy().tobytes())
                h.update(repr(float(flat.float().sum())).encode())
    return h.hexdigest()[:16]


def _processor_settings(processor) -> str:
    image_processor = getattr(processor, "image_processor", processor)
    to_dict = getattr(image_processor, "to_dict", None)
    return json.dumps(to_dict() if to_dict else repr(image_processor), sort_keys=True, default=str)


def _collate_images(processor, images: list) -> torch.Tensor:
    return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


class CirEvaluator:
    """Shared base of the benchmark evaluators.

    Args:
        data_root (`str` or `os.PathLike`): the benchmark's folder (official layout; see
            [`dataset_builders.cir_benchmarks`]).
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
    """

    benchmark: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""

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
    ):
        self.loader = get_loader(self.benchmark, data_root, annotations_dir, image_root)
        self.split = self.loader.normalize_split(split)
        self.batch_size = batch_size
        self.top_k = top_k
        self.cache_dir = None if cache_dir == "" else Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.allow_missing = allow_missing
        self.max_queries = max_queries
        self.num_workers = num_workers
        self.show_progress = show_progress
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
        """One or more texts per query; their composed features are averaged (default: `text` only)."""
        return [[t] for t in split.queries["text"]]

    def score(self) -> dict[str, float]:
        """The benchmark's metrics (percent) from `self.rankings`."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- shared logic
    def _key(self, part: str | None) -> str:
        return part or self.benchmark

    def _device(self, model) -> torch.device:
        return next(model.parameters()).device

    def _loader(self, dataset, collate):
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, collate_fn=collate
        )

    def _cache_path(self, model, processor, split: CirSplit) -> Path | None:
        if self.cache_dir is None:
            return None
        h = hashlib.sha256()
        h.update(model_fingerprint(model).encode())
        h.update(_processor_settings(processor).encode())
        paths = [
            im["path"]
            for im in split.gallery.select_columns("image").cast_column("image", _undecoded_image())["image"]
        ]
        for image_id, path in zip(split.gallery["image_id"], paths):
            stat = os.stat(path) if path and os.path.exists(path) else None
            h.update(f"{image_id}|{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
        return self.cache_dir / f"{split.name}-{split.split}-{h.hexdigest()[:20]}.safetensors"

    @torch.no_grad()
    def encode_gallery(self, model, processor, split: CirSplit) -> torch.Tensor:
        """`(M, Q, D)` image features of the gallery, in `split.gallery` order (read from / written to the cache)."""
        from safetensors.torch import load_file, save_file

        path = self._cache_path(model, processor, split)
        if path is not None and path.is_file():
            logger.info("gallery features from cache %s", path)
            return load_file(path)["features"]
        device, chunks = self._device(model), []
        loader = self._loader(split.gallery, lambda rows: _collate_images(processor, [r["image"] for r in rows]))
        for pixel_values in tqdm(loader, desc=f"{split.name} gallery", disable=not self.show_progress):
            pixel_values = pixel_values.to(device=device, dtype=model.dtype)
            chunks.append(model.get_image_features(pixel_values=pixel_values).float().cpu())
        features = torch.cat(chunks)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": features.contiguous()}, str(path))
        return features

    @torch.no_grad()
    def encode_queries(self, model, processor, split: CirSplit) -> torch.Tensor:
        """`(N, D)` composed query features (the mean of each query's texts' features, renormalised)."""
        texts = self.query_texts(split)
        n_texts = len(texts[0])
        device, chunks = self._device(model), []
        rows = _QueryRows(split.queries, texts)

        def collate(batch):
            images = [r["image"].convert("RGB") for r in batch]
            flat = [t for r in batch for t in r["texts"]]
            enc = processor(images=images, text=flat, return_tensors="pt")
            return enc["pixel_values"], enc["input_ids"], enc["attention_mask"]

        loader = self._loader(rows, collate)
        for pixel_values, input_ids, attention_mask in tqdm(
            loader, desc=f"{split.name} queries", disable=not self.show_progress
        ):
            pixel_values = pixel_values.to(device=device, dtype=model.dtype)
            vision = model.get_vision_outputs(pixel_values).repeat_interleave(n_texts, dim=0)
            feats = model.get_composed_features(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), vision_embeds=vision
            ).float()
            feats = feats.view(-1, n_texts, feats.shape[-1]).mean(dim=1)
            chunks.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(chunks)

    def rank_subset(
        self, queries: torch.Tensor, gallery: torch.Tensor, ids: list[str], candidates: list[list[str]]
    ) -> list[list[str]]:
        """Rank each query's own candidate ids (CIRR's image set) by max-sim; ties keep the candidates' order."""
        from modeling_mra_cir import max_sim_logits

        position = {image_id: i for i, image_id in enumerate(ids)}
        out = []
        for q, cands in zip(queries, candidates):
            cands = [c for c in cands if c in position]
            if not cands:
                out.append([])
                continue
            scores = max_sim_logits(q[None], gallery[[position[c] for c in cands]])[0]
            order = torch.argsort(scores, descending=True, stable=True).tolist()
            out.append([cands[i] for i in order])
        return out

    def __call__(self, model, processor=None) -> dict[str, float]:
        """Rank every query of the split; return the metrics in percent (empty for a test split).

        Args:
            model ([`MraCirModel`]): any model with `get_image_features`, `get_vision_outputs` and
                `get_composed_features`.
            processor ([`MraCirProcessor`], *optional*): default: loaded from `model.name_or_path`.
        """
        from modeling_mra_cir.gallery_index import GalleryIndex

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
                gallery = self.encode_gallery(model, processor, split)
                ids = list(split.gallery["image_id"])
                index = GalleryIndex(gallery, ids)
                queries = self.encode_queries(model, processor, split)
                k = min(self.top_k, len(index) - 1 if self.excludes_reference else len(index))
                # searched on the model's device (the index moves the gallery block by block)
                _, ranked = index.search(queries.to(self._device(model)), k=k, exclude=self.exclusions(split))
                query_ids = list(split.queries["query_id"])
                self.rankings[key] = {q: list(r) for q, r in zip(query_ids, ranked)}
                self.after_ranking(key, split, queries, gallery, ids)
        finally:
            model.train(was_training)
        self.report = {self._key(p): self.splits[self._key(p)].report() for p in self.parts}
        has_truth = all(all(t for t in s.queries["target_ids"]) for s in self.splits.values())
        return self.score() if has_truth else {}

    excludes_reference: ClassVar[bool] = False

    def after_ranking(self, key: str, split: CirSplit, queries, gallery, ids) -> None:
        """Hook run after a part is ranked (CIRR: subset rankings)."""

    @property
    def complete(self) -> bool:
        """Whether every query and image of the official split was evaluated."""
        return bool(self.splits) and all(s.complete for s in self.splits.values()) and self.max_queries is None

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

    def rankings_files(self) -> dict[str, Any]:
        """File name -> JSON content of the kept rankings."""
        raise NotImplementedError

    def write_submission(self, output_dir: str | os.PathLike) -> list[Path]:
        """Validate and write the test-server files of the evaluated split."""
        raise NotImplementedError


class FashionIQEvaluator(CirEvaluator):
    """FashionIQ: the three categories (or `categories`), the reference kept in the gallery; R@10, R@50 and their
    mean. `caption_order_average=True` averages the composed features of both caption orders."""

    benchmark = "fashioniq"
    primary_metric = "average_R@10"

    def __init__(
        self, *args, categories: Sequence[str] = FASHIONIQ_CATEGORIES, caption_order_average: bool = False, **kwargs
    ):
        super().__init__(*args, **kwargs)
        unknown = set(categories) - set(FASHIONIQ_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown FashionIQ categories {sorted(unknown)}; choose from {FASHIONIQ_CATEGORIES}")
        self.categories = tuple(categories)
        self.caption_order_average = caption_order_average

    @property
    def parts(self):
        return self.categories

    def query_texts(self, split):
        if not self.caption_order_average:
            return super().query_texts(split)
        return [
            [join_fashioniq_captions(c), join_fashioniq_captions(c, reverse=True)] for c in split.queries["captions"]
        ]

    def score(self):
        rankings = {cat: list(self.rankings[cat].values()) for cat in self.categories}
        targets = {cat: [t[0] for t in self.splits[cat].queries["target_ids"]] for cat in self.categories}
        return cir_metrics.score_fashioniq(rankings, targets)

    def rankings_files(self):
        return {"fashioniq_rankings.json": {cat: list(self.rankings[cat].values()) for cat in self.categories}}

    def write_submission(self, output_dir):
        return [
            submissions.write_fashioniq_submission(
                output_dir,
                cat,
                self.loader.read_queries(self.split, cat)[0],
                list(self.rankings[cat].values()),
                split=self.split,
            )
            for cat in self.categories
        ]


class CirrEvaluator(CirEvaluator):
    """CIRR: the reference deleted from each ranking; R@1/5/10/50 and R_subset@1/2/3 (the other set members)."""

    benchmark = "cirr"
    primary_metric = "R@1"
    excludes_reference = True

    def exclusions(self, split):
        return list(split.queries["reference_id"])

    def after_ranking(self, key, split, queries, gallery, ids):
        refs = split.queries["reference_id"]
        candidates = [[m for m in members if m != ref] for members, ref in zip(split.queries["members"], refs)]
        ranked = self.rank_subset(queries, gallery, ids, candidates)
        self.subset_rankings[key] = dict(zip(split.queries["query_id"], ranked))

    def score(self):
        split = self.splits["cirr"]
        q = split.queries
        return cir_metrics.score_cirr(
            list(self.rankings["cirr"].values()),
            references=q["reference_id"],
            targets=[t[0] for t in q["target_ids"]],
            members=q["members"],
            subset_rankings=list(self.subset_rankings["cirr"].values()),
            query_ids=q["query_id"],
        )

    def _server_dicts(self) -> tuple[dict, dict]:
        q = self.splits["cirr"].queries
        return submissions.cirr_submission(
            self.rankings["cirr"],
            self.subset_rankings["cirr"],
            dict(zip(q["query_id"], q["reference_id"])),
            dict(zip(q["query_id"], q["members"])),
        )

    def rankings_files(self):
        recall, subset = self._server_dicts()
        return {f"cirr_{self.split}_recall.json": recall, f"cirr_{self.split}_recall_subset.json": subset}

    def write_submission(self, output_dir):
        rows = self.loader.read_queries(self.split)[1]  # every official query must be there
        return list(
            submissions.write_cirr_submission(
                output_dir,
                self.rankings["cirr"],
                self.subset_rankings["cirr"],
                {r["query_id"]: r["reference_id"] for r in rows},
                {r["query_id"]: r["members"] for r in rows},
                prefix=f"{self.split}_pred_ranks",
            )
        )


class CircoEvaluator(CirEvaluator):
    """CIRCO: mAP@5/10/25/50 with several ground truths; the reference is kept unless `exclude_reference=True`."""

    benchmark = "circo"
    primary_metric = "mAP@5"

    def __init__(self, *args, exclude_reference: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude_reference = exclude_reference

    @property
    def excludes_reference(self) -> bool:  # type: ignore[override]
        return self.exclude_reference

    def exclusions(self, split):
        return list(split.queries["reference_id"]) if self.exclude_reference else super().exclusions(split)

    def score(self):
        q = self.splits["circo"].queries
        return cir_metrics.score_circo(
            list(self.rankings["circo"].values()),
            ground_truths=q["target_ids"],
            references=q["reference_id"],
            exclude_reference=self.exclude_reference,
            query_ids=q["query_id"],
        )

    def rankings_files(self):
        return {
            f"circo_{self.split}_rankings.json": {q: [int(x) for x in r] for q, r in self.rankings["circo"].items()}
        }

    def write_submission(self, output_dir):
        q_ids = [r["query_id"] for r in self.loader.read_queries(self.split)[1]]  # every official query
        return [
            submissions.write_circo_submission(
                Path(output_dir) / f"circo_{self.split}_submission.json", self.rankings["circo"], q_ids
            )
        ]


EVALUATORS: dict[str, type[CirEvaluator]] = {
    "fashioniq": FashionIQEvaluator,
    "cirr": CirrEvaluator,
    "circo": CircoEvaluator,
}


class _QueryRows(torch.utils.data.Dataset):
    """Query `i` as `{"image": reference image (decoded on access), "texts": its texts}`."""

    def __init__(self, queries, texts: list[list[str]]):
        self.queries, self.texts = queries, texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.queries[i]["reference_image"], "texts": self.texts[i]}


def _undecoded_image():
    import datasets

    return datasets.Image(decode=False)


def _load_processor(model):
    from transformers import AutoProcessor

    source = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    if not source:
        raise ValueError("no processor given and the model has no name_or_path to load one from")
    return AutoProcessor.from_pretrained(source)


__all__ = [
    "EVALUATORS",
    "CirEvaluator",
    "CircoEvaluator",
    "CirrEvaluator",
    "FashionIQEvaluator",
    "model_fingerprint",
]
