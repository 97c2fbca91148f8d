"""Composed image retrieval metrics (Recall@K, CIRR's protocol, CIRCO's mAP@K) as an `evaluate` module.

Loads offline from this folder: `evaluate.load(mra_cir.evaluation.cir_metric.MODULE_DIR, "<config>")`. The arithmetic
is `mra_cir.evaluation` (installed with mra-cir): one implementation for the evaluators, the command line and here.
"""

import datasets
import evaluate

from mra_cir.evaluation import metrics as cir_metrics
from mra_cir.evaluation.cirr import score_cirr

_CITATION = """\
@article{mra_cir_2025,
  title={Reasoning-driven zero-shot composed image retrieval with a Multimodal Reasoning Agent},
  journal={arXiv preprint arXiv:2505.19952},
  year={2025}
}
"""

_DESCRIPTION = """\
Ranking metrics of zero-shot composed image retrieval, in percent, with the community's protocols:

- `recall` (default): Recall@K (any reference id among the first K predictions), optional ids to delete per query
  (`exclude`) and candidate sets (`subset`), e.g. FashionIQ's R@10/R@50.
- `cirr`: CIRR's R@1/5/10/50 and R_subset@1/2/3; the reference (`reference_ids`) is deleted from every ranking and
  R_subset restricts the ranking to the query's image set (`members`).
- `map`: CIRCO's mAP@K (K = 5, 10, 25, 50) with several ground truths, divided by min(#ground truths, K).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): the ranked gallery ids of each query, best first (ids as strings).
    references (`list[list[str]]`): the ground-truth ids of each query (one for FashionIQ and CIRR).
    ks (`list[int]`, *optional*): cut-offs (defaults: recall [1, 5, 10, 50], map [5, 10, 25, 50]).
    exclude (`list[str]`, *optional*, `recall`/`map`): an id to delete from each ranking (e.g. the reference).
    subset (`list[list[str]]`, *optional*, `recall`): keep only these ids in each ranking.
    reference_ids (`list[str]`, `cirr`): the reference image of each query.
    members (`list[list[str]]`, `cirr`): the `img_set.members` of each query.
    subset_predictions (`list[list[str]]`, *optional*, `cirr`): separate subset rankings (the server's file).
Returns:
    `dict[str, float]`: `R@K` (recall), `R@K` + `R_subset@K` (cirr), `mAP@K` (map), in percent.
Examples:
    >>> metric = evaluate.load(MODULE_DIR, "map")
    >>> metric.compute(predictions=[["1", "9", "2"]], references=[["1", "2"]], ks=[5])
    {'mAP@5': 83.33333333333333}
"""

CONFIGS = ("recall", "cirr", "map")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CirMetricModule(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS and self.config_name != "default":
            raise KeyError(f"config name must be one of {list(CONFIGS)}, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2505.19952"],
        )

    def _compute(
        self,
        predictions,
        references,
        ks=None,
        exclude=None,
        subset=None,
        reference_ids=None,
        members=None,
        subset_predictions=None,
    ):
        predictions = [list(p) for p in predictions]
        references = [list(r) for r in references]
        cir_metrics.check_unique(predictions)
        name = "recall" if self.config_name == "default" else self.config_name
        if name == "cirr":
            if reference_ids is None or members is None:
                raise ValueError("the cirr config needs reference_ids and members")
            return score_cirr(
                predictions,
                reference_ids,
                [r[0] for r in references],
                members,
                subset_rankings=subset_predictions,
                ks=tuple(ks or cir_metrics.CIRR_KS),
            )
        if exclude is not None:
            predictions = cir_metrics.remove_from_rankings(
                predictions, [str(e) if e is not None else None for e in exclude]
            )
        if name == "map":
            scores = cir_metrics.map_at_k(predictions, references, tuple(ks or cir_metrics.CIRCO_KS))
            return {f"mAP@{k}": 100.0 * v for k, v in scores.items()}
        if subset is not None:
            predictions = cir_metrics.restrict_rankings(predictions, [[str(x) for x in s] for s in subset])
        scores = cir_metrics.recall_at_k(predictions, references, tuple(ks or cir_metrics.CIRR_KS))
        return {f"R@{k}": 100.0 * v for k, v in scores.items()}
