"""Zero-shot evaluation on FashionIQ, CIRR and CIRCO, scored exactly as the community does.

`benchmark` (the loaders' base: one query/gallery schema, image paths resolved and checked), one module per benchmark
(`fashioniq`, `cirr`, `circo`: loader, protocol scorer, rankings and submission files, evaluator), `evaluator` (the
evaluator base class, ranking through `mra_cir.retrieval.encoding`), `metrics` (Recall@K, Recall_subset@K,
mAP@K), `submissions` (shared file checks), `by_type` (the same protocols per transformation type of the query
texts) and `cir_metric` (the same metrics as an `evaluate` module).

`BENCHMARKS` maps each benchmark name to its module; every module has a `LOADER`-like class, an evaluator class,
`score_rankings_file` and its protocol scorer, so nothing dispatches on the name by hand.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import circo, cirr, fashioniq
from .benchmark import CirBenchmarkLoader, CirSplit, MissingImagesError
from .circo import CircoEvaluator, CircoLoader
from .cirr import CirrEvaluator, CirrLoader
from .evaluator import CirEvaluator
from .fashioniq import FASHIONIQ_CATEGORIES, FashionIQEvaluator, FashionIQLoader

#: benchmark name -> its module
BENCHMARKS: dict[str, ModuleType] = {"fashioniq": fashioniq, "cirr": cirr, "circo": circo}
EVALUATORS: dict[str, type[CirEvaluator]] = {
    "fashioniq": FashionIQEvaluator,
    "cirr": CirrEvaluator,
    "circo": CircoEvaluator,
}
LOADERS: dict[str, type[CirBenchmarkLoader]] = {
    "fashioniq": FashionIQLoader,
    "cirr": CirrLoader,
    "circo": CircoLoader,
}


def _check(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")


def get_loader(benchmark: str, data_root=None, annotations_dir=None, image_root=None) -> CirBenchmarkLoader:
    """The loader of `benchmark` (`"fashioniq"`, `"cirr"` or `"circo"`)."""
    _check(benchmark)
    return LOADERS[benchmark](data_root=data_root, annotations_dir=annotations_dir, image_root=image_root)


def load_cir_benchmark(
    benchmark: str,
    data_root: str | os.PathLike,
    split: str = "val",
    subset: str | None = None,
    allow_missing: bool = False,
    max_queries: int | None = None,
    annotations_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> CirSplit:
    """Load one benchmark split (see [`CirBenchmarkLoader.load`])."""
    loader = get_loader(benchmark, data_root, annotations_dir, image_root)
    return loader.load(split, subset=subset, allow_missing=allow_missing, max_queries=max_queries)


def score_rankings_file(
    benchmark: str,
    annotations: str | os.PathLike,
    rankings: str | os.PathLike,
    subset_rankings: str | os.PathLike | None = None,
    split: str = "val",
    exclude_reference: bool = False,
    tagger=None,
) -> dict[str, float]:
    """Score a rankings file of `benchmark` against its annotation folder with the benchmark's protocol.

    Args:
        benchmark (`str`): `"fashioniq"`, `"cirr"` or `"circo"`.
        annotations (`str` or `os.PathLike`): the annotation folder in its official layout (or a folder above it).
        rankings (`str` or `os.PathLike`): the rankings file (each benchmark module's docstring gives its format).
        subset_rankings (*optional*): CIRR only: the `recall_subset` file.
        split (`str`, defaults to `"val"`): only val has public ground truth.
        exclude_reference (`bool`, defaults to `False`): CIRCO only: delete the reference (the official scorer
            keeps it).
        tagger (`Callable[[str], list[str]]`, *optional*): a transformation-type tagger (text -> types, e.g.
            `mra_cir.dataset_builders.mra_triplets.transformation_types.tag_types`): adds the scores per type
            (`by_type`, see [`.by_type`]; CIRCO also gets `mAP@10_type_<type>` beside `mAP@10_<aspect>`).

    Returns:
        `dict[str, float]`: the benchmark's metrics in percent (and `by_type` with a tagger).
    """
    _check(benchmark)
    if subset_rankings is not None and benchmark != "cirr":
        raise ValueError("--subset-rankings is for CIRR only")
    if exclude_reference and benchmark != "circo":
        raise ValueError("--exclude-reference is for CIRCO only (FashionIQ keeps the reference, CIRR always drops it)")
    loader = get_loader(benchmark, data_root=annotations)
    metrics = BENCHMARKS[benchmark].score_rankings_file(
        loader,
        loader.normalize_split(split),
        rankings,
        subset_rankings=subset_rankings,
        exclude_reference=exclude_reference,
    )
    if tagger is None:
        return metrics
    from .by_type import rankings_file_by_type, with_types

    split = loader.normalize_split(split)
    table = rankings_file_by_type(benchmark, loader, split, rankings, tagger, subset_rankings, exclude_reference)
    return with_types(metrics, table, benchmark)


__all__ = [
    "BENCHMARKS",
    "EVALUATORS",
    "FASHIONIQ_CATEGORIES",
    "LOADERS",
    "CirBenchmarkLoader",
    "CirEvaluator",
    "CirSplit",
    "CircoEvaluator",
    "CircoLoader",
    "CirrEvaluator",
    "CirrLoader",
    "FashionIQEvaluator",
    "FashionIQLoader",
    "MissingImagesError",
    "get_loader",
    "load_cir_benchmark",
    "score_rankings_file",
]
