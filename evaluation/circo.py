"""CIRCO (Baldrati et al., 2023): loader, protocol scorer, rankings and submission files, evaluator.

Official layout: `<root>/annotations/{val,test}.json`; the gallery is COCO 2017 unlabeled: `image_info_unlabeled2017.json`
(in `<root>/COCO2017_unlabeled/annotations/`, `<root>/annotations/` or `<root>`) and the images in
`<root>/COCO2017_unlabeled/unlabeled2017/` or `<root>/unlabeled2017/`. Without the info file the gallery is every
image in the image folder whose name is a number (a warning says so). Protocol: mAP@K (K = 5, 10, 25, 50) with several
ground truths (`gt_img_ids`): over the top K, the sum of the precision at each rank holding a ground truth, divided by
`min(#ground truths, K)`, averaged over queries, in percent; predictions unique per query; the reference is not
excluded by the official scorer. Beside mAP@K, CIRCO's own evaluation script (`src/evaluation.py` of miccunifi/CIRCO)
prints Recall@K against the single `target_img_id` (the image the caption was written for) and mAP@10 per semantic
aspect (`semantic_aspects` of `annotations/val.json`): [`score_circo`] reports them when given the targets and aspects.

Rankings and test-server file: `{"<query id>": [top-50 COCO image ids]}` for every query id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from .benchmark import CirBenchmarkLoader, contained_path, index_folder, read_json
from .evaluator import CirEvaluator
from .metrics import (
    CIRCO_KS,
    Rankings,
    as_strings,
    average_precision_at_k,
    check_unique,
    map_at_k,
    recall_at_k,
    remove_from_rankings,
)
from .submissions import (
    SubmissionError,
    check_ids,
    check_ranking,
    load_rankings_json,
    require_ground_truth,
    write_json,
)

logger = logging.getLogger(__name__)

CIRCO_LENGTH = 50
#: the semantic aspects of CIRCO's val annotations, in the order the official script prints them
CIRCO_SEMANTIC_ASPECTS = (
    "cardinality",
    "addition",
    "negation",
    "direct_addressing",
    "compare_change",
    "comparative_statement",
    "statement_with_conjunction",
    "spatial_relations_background",
    "viewpoint",
)
SEMANTIC_K = 10  # the official script reports mAP@10 per semantic aspect


class CircoLoader(CirBenchmarkLoader):
    """CIRCO (Baldrati et al., 2023): queries `annotations/<split>.json`, several ground truths per query
    (`gt_img_ids`), gallery = COCO 2017 unlabeled (123,403 images). The official scorer keeps the reference."""

    name = "circo"
    annotation_probe = "annotations/val.json"
    annotation_subdirs = ("circo", "CIRCO")

    def _coco_dirs(self) -> tuple[Path | None, Path]:
        root = self.data_root
        info_candidates = [
            root / "COCO2017_unlabeled" / "annotations",
            root / "annotations",
            root / "COCO2017_unlabeled",
            root,
        ]
        info = next(
            (
                c / "image_info_unlabeled2017.json"
                for c in info_candidates
                if (c / "image_info_unlabeled2017.json").is_file()
            ),
            None,
        )
        if self._image_root is not None:
            return info, self._image_root
        image_candidates = [root / "COCO2017_unlabeled" / "unlabeled2017", root / "unlabeled2017"]
        images = next((c for c in image_candidates if c.is_dir()), image_candidates[0])
        return info, images

    @property
    def image_root(self) -> Path:
        return self._coco_dirs()[1]

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "annotations" / f"{split}.json"
        records = read_json(path, f"CIRCO {split} annotations")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of query records")
        rows = []
        for i, rec in enumerate(records):
            for key in ("id", "reference_img_id", "relative_caption"):
                if key not in rec:
                    raise ValueError(f"{path}: record {i} lacks {key!r}")
            rows.append(
                {
                    "query_id": str(rec["id"]),
                    "reference_id": str(rec["reference_img_id"]),
                    "text": rec["relative_caption"],
                    "captions": [rec["relative_caption"]],
                    "target_ids": [str(g) for g in rec.get("gt_img_ids", [])],
                    "members": [],
                }
            )
        return records, rows

    def _gallery(self) -> dict[str, str]:
        info, images = self._coco_dirs()
        if info is not None:
            data = read_json(info, "COCO image_info_unlabeled2017.json")
            if not isinstance(data, dict) or "images" not in data:
                raise ValueError(f"{info}: expected a COCO image info file with an 'images' list")
            files = {str(im["id"]): im.get("file_name", f"{int(im['id']):012d}.jpg") for im in data["images"]}
            for image_id, name in files.items():  # a file name in the image folder, never a path out of it
                if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                    contained_path(images, str(name), str(info), image_id)
            return files
        logger.warning(
            "circo: image_info_unlabeled2017.json not found under %s; the gallery is every image in %s",
            self.data_root,
            images,
        )
        return {str(int(stem)): path.name for stem, path in sorted(index_folder(images).items()) if stem.isdigit()}

    def read_gallery_ids(self, split, subset=None):
        return list(self._gallery())

    def image_paths(self, ids, split):
        files = self._gallery()
        folder = self.image_root
        index = {p.name: p for p in index_folder(folder).values()}
        out: dict[str, Path | None] = {}
        for i in ids:
            name = files.get(i, f"{int(i):012d}.jpg" if i.isdigit() else i)
            out[i] = index.get(name)
        return out


def score_circo(
    rankings: Rankings,
    ground_truths: Sequence[Collection],
    references: Sequence | None = None,
    exclude_reference: bool = False,
    ks: Sequence[int] = CIRCO_KS,
    query_ids: Sequence[str] | None = None,
    targets: Sequence | None = None,
    semantic_aspects: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """CIRCO: mAP@K in percent (`mAP@5`, `mAP@10`, `mAP@25`, `mAP@50`), and what the official script prints beside it.

    Args:
        rankings (`Sequence[Sequence]` of length N): ranked COCO ids per query (unique per query).
        ground_truths (`Sequence[Collection]` of length N): `gt_img_ids` per query.
        references (`Sequence`, *optional*): `reference_img_id` per query, needed with `exclude_reference`.
        exclude_reference (`bool`, defaults to `False`): delete the reference before scoring (the official scorer
            does not).
        ks (`Sequence[int]`, defaults to `(5, 10, 25, 50)`): the cut-offs of mAP@K (and Recall@K).
        query_ids (`Sequence[str]`, *optional*): names the query in errors.
        targets (`Sequence`, *optional*): `target_img_id` per query: adds `Recall@K` for every K of `ks`, the
            official script's recall against the single target the caption was written for (`gt_img_ids[0]`).
        semantic_aspects (`Sequence[Sequence[str]]`, *optional*): `semantic_aspects` per query: adds
            `mAP@10_<aspect>` (the mean AP@10 of the queries carrying that aspect) for each aspect that some query
            carries, in the official order ([`CIRCO_SEMANTIC_ASPECTS`], then any other aspect by name).

    Returns:
        `dict[str, float]`: `mAP@K`, then `Recall@K`, then `mAP@10_<aspect>` (percent).

    Example:

    ```python
    >>> score_circo([["7", "3"]], [["3", "9"]], targets=["3"], semantic_aspects=[["addition"]], ks=(5,))
    {'mAP@5': 25.0, 'Recall@5': 100.0, 'mAP@10_addition': 25.0}
    ```
    """
    ranked = as_strings(rankings)
    check_unique(ranked, query_ids)
    if exclude_reference:
        if references is None:
            raise ValueError("score_circo: exclude_reference needs the references")
        ranked = remove_from_rankings(ranked, [str(r) for r in references])
    gts = [[str(g) for g in gt] for gt in ground_truths]
    out = {f"mAP@{k}": 100.0 * v for k, v in map_at_k(ranked, gts, ks).items()}
    if targets is not None:
        if len(targets) != len(ranked):
            raise ValueError(f"score_circo: {len(ranked)} rankings but {len(targets)} target_img_id values")
        out.update({f"Recall@{k}": 100.0 * v for k, v in recall_at_k(ranked, [str(t) for t in targets], ks).items()})
    if semantic_aspects is not None:
        if len(semantic_aspects) != len(ranked):
            raise ValueError(f"score_circo: {len(ranked)} rankings but {len(semantic_aspects)} semantic_aspects lists")
        per_aspect: dict[str, list[float]] = {}
        for ranking, gt, aspects in zip(ranked, gts, semantic_aspects):
            ap = average_precision_at_k(ranking, gt, SEMANTIC_K)
            for aspect in aspects or ():
                per_aspect.setdefault(str(aspect), []).append(ap)
        order = [a for a in CIRCO_SEMANTIC_ASPECTS if a in per_aspect] + sorted(
            a for a in per_aspect if a not in CIRCO_SEMANTIC_ASPECTS
        )
        out.update({f"mAP@{SEMANTIC_K}_{a}": 100.0 * sum(per_aspect[a]) / len(per_aspect[a]) for a in order})
    return out


def official_extras(records: Sequence[Mapping]) -> dict[str, list]:
    """`targets` and `semantic_aspects` for [`score_circo`] from CIRCO annotation records (`target_img_id`,
    `semantic_aspects`), for the fields every record has (val has both; test has neither: `{}`)."""
    extras: dict[str, list] = {}
    if records and all("target_img_id" in r for r in records):
        extras["targets"] = [str(r["target_img_id"]) for r in records]
    if records and all("semantic_aspects" in r for r in records):
        extras["semantic_aspects"] = [list(r["semantic_aspects"] or ()) for r in records]
    return extras


def validate_circo_submission(data: Mapping, query_ids: Sequence[str], where: str = "CIRCO submission") -> None:
    """Check a CIRCO server file: every query id once, 50 unique integer COCO ids each."""
    check_ids(where, [str(k) for k in data], query_ids)
    for qid, ranking in data.items():
        check_ranking(where, str(qid), ranking, CIRCO_LENGTH, exact=True)
        if not all(isinstance(x, int) for x in ranking):
            raise SubmissionError(f"{where}: query {qid!r}: COCO ids must be integers")


def write_circo_submission(
    path: str | os.PathLike, rankings: Mapping[str, Sequence[str | int]], query_ids: Sequence[str]
) -> Path:
    """Validate and write `{"<query id>": [top-50 COCO ids]}` (the CIRCO server format) to `path`."""
    data = {str(qid): [int(x) for x in rankings[qid]][:CIRCO_LENGTH] for qid in query_ids if qid in rankings}
    validate_circo_submission(data, [str(q) for q in query_ids])
    return write_json(Path(path), data)


def read_circo_rankings(
    path: str | os.PathLike, query_ids: Sequence[str], gallery: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Read `{"<query id>": [COCO ids]}`; returns query id -> ranked ids as strings, for every id of `query_ids`.

    Every ranked id must be a COCO image id (an integer); with `gallery` (the split's COCO 2017 unlabeled ids), one of
    the gallery's: an unknown id raises [`SubmissionError`] naming the query and the id."""
    where = str(path)
    data = load_rankings_json(path)
    if not isinstance(data, dict):
        raise SubmissionError(f"{where}: expected a JSON object query id -> ranked COCO ids (CIRCO server format)")
    preds = {str(k): v for k, v in data.items()}
    check_ids(where, list(preds), query_ids)
    ranked = {qid: check_ranking(where, qid, preds[qid]) for qid in query_ids}
    known = set(gallery) if gallery else None
    for qid, ranking in ranked.items():
        bad = [x for x in ranking if not x.isdigit()] if known is None else [x for x in ranking if x not in known]
        if bad:
            what = "not a COCO image id" if known is None else "not in the gallery (COCO 2017 unlabeled)"
            raise SubmissionError(f"{where}: query {qid!r}: id {bad[0]!r} is {what} ({len(bad)} such id(s))")
    return ranked


def score_rankings_file(
    loader: CircoLoader, split: str, rankings: str | os.PathLike, exclude_reference: bool = False, **unused
) -> dict[str, float]:
    """Score a CIRCO rankings file (`{"<query id>": [COCO ids]}`) against the loader's annotations."""
    records, rows = loader.read_queries(split)
    require_ground_truth("circo", split, rows)
    query_ids = [row["query_id"] for row in rows]
    # the gallery is known from COCO's image info file (without it, ids are only checked to be COCO ids)
    gallery = loader.read_gallery_ids(split) if loader._coco_dirs()[0] is not None else None
    ranked = read_circo_rankings(rankings, query_ids, gallery)
    return score_circo(
        [ranked[q] for q in query_ids],
        ground_truths=[row["target_ids"] for row in rows],
        references=[row["reference_id"] for row in rows],
        exclude_reference=exclude_reference,
        query_ids=query_ids,
        **official_extras(records),
    )


class CircoEvaluator(CirEvaluator):
    """CIRCO: mAP@5/10/25/50 with several ground truths, plus what the official script prints beside them on val
    (`Recall@K` against `target_img_id`, `mAP@10_<aspect>` per semantic aspect); the reference is kept unless
    `exclude_reference=True`."""

    benchmark = "circo"
    primary_metric = "mAP@5"
    loader_class = CircoLoader

    def __init__(self, *args, exclude_reference: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude_reference = exclude_reference

    @property
    def excludes_reference(self) -> bool:  # type: ignore[override]
        return self.exclude_reference

    def exclusions(self, split):
        return list(split.queries["reference_id"]) if self.exclude_reference else super().exclusions(split)

    def score(self):
        split = self.splits["circo"]
        q = split.queries
        return score_circo(
            list(self.rankings["circo"].values()),
            ground_truths=q["target_ids"],
            references=q["reference_id"],
            exclude_reference=self.exclude_reference,
            query_ids=q["query_id"],
            **official_extras(split.records),
        )

    def rankings_files(self):
        return {
            f"circo_{self.split}_rankings.json": {q: [int(x) for x in r] for q, r in self.rankings["circo"].items()}
        }

    def write_submission(self, output_dir):
        q_ids = [r["query_id"] for r in self.loader.read_queries(self.split)[1]]  # every official query
        return [
            write_circo_submission(
                Path(output_dir) / f"circo_{self.split}_submission.json", self.rankings["circo"], q_ids
            )
        ]


__all__ = [
    "CIRCO_LENGTH",
    "CIRCO_SEMANTIC_ASPECTS",
    "CircoEvaluator",
    "CircoLoader",
    "read_circo_rankings",
    "official_extras",
    "score_circo",
    "score_rankings_file",
    "validate_circo_submission",
    "write_circo_submission",
]
