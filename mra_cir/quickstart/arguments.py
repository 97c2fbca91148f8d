"""`QuickstartArguments`: the options of `mra-cir quickstart` / `examples/quickstart.py`, and the mining windows.

Rank windows are given in the paper's ranks (51-60 of ~1.2M ImageNet images) and scaled linearly with the pool size
relative to `--window_reference_pool_size` (default 2000, where the paper's numbers are used as they are): a literal
fraction of 1.2M would put every window at rank 1 of a few thousand images, erasing the difference between
"near-duplicate" and "related but different" that the window is about. Measured on one seed (stage-1 embeddings, max-sim over token pairs), the agent's
texts for rank-1 pairs were 11% "no change", 34% one change and 55% two changes; for ranks 51-60, 1% / 19% / 80%; for
random pairs mostly two or three changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mra_cir.dataset_builders.mra_triplets.mining import parse_window

#: the ablation's windows in the paper's ranks (the paper's sweep, "random" = uniform over the whole pool)
ABLATION_WINDOWS = ("1-1", "11-20", "31-40", "51-60", "91-100", "random")
#: the shipped stand-in for pretrained BLIP-2 (a model folder: `MraCirModel.from_pretrained(STAND_IN)`), made by
#: `mra-cir pretrain-stand-in` (its `README.md` card says how, on what and how long)
STAND_IN = Path(__file__).parent / "stand_in"
#: the seeds of the default run (`mra-cir quickstart`, `make quickstart`): the README's table
DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class QuickstartArguments:
    """Options of `mra-cir quickstart` / `examples/quickstart.py` (sizes left unset take the defaults below)."""

    seed: int | None = field(
        default=None,
        metadata={"help": "One run with this seed of the world, the mining, the agent and training (default 0)."},
    )
    output_dir: str = field(default="quickstart_output", metadata={"help": "Where results, plots and caches go."})
    fast: bool = field(default=False, metadata={"help": "One seed (--seed, default 0) instead of the 3-seed table."})
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "Run the quickstart for each of these seeds (into <output_dir>/seed_<S>) and write one table of "
            "mean and spread per method and benchmark (seeds.json, seeds.md). Default (no --fast, no --seed): 0 1 2."
        },
    )
    seed_workers: int = field(
        default=2,
        metadata={"help": "Processes that run the seeds of --seeds side by side (results do not depend on it)."},
    )
    stand_in: str | None = field(
        default=None,
        metadata={
            "help": "The pretrained stand-in for BLIP-2 that the method starts from: a model folder "
            "(default: the one shipped with the package, mra_cir.quickstart.STAND_IN, made by mra-cir pretrain-stand-in)."
        },
    )
    pretrain_from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Pretrain a small stand-in inside the run instead (stage 1: the --stage1_* and size options below "
            "apply only then)."
        },
    )
    pool_size: int | None = field(default=None, metadata={"help": "Pool images (default 2000)."})
    num_queries: int | None = field(
        default=None, metadata={"help": "Queries of the single-edit diagnostic (default 100)."}
    )
    cirr_queries: int = field(default=400, metadata={"help": "Queries of the CIRR-style benchmark."})
    circo_queries: int = field(default=200, metadata={"help": "Queries of the CIRCO-style benchmark."})
    image_size: int = field(default=32, metadata={"help": "Image side in pixels (the model's image size)."})
    stage1_steps: int | None = field(
        default=None, metadata={"help": "Stage-1 steps with --pretrain_from_scratch (default 2400)."}
    )
    train_steps: int | None = field(default=None, metadata={"help": "MRA training steps (default 300)."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the ViT and the Q-Former."})
    num_layers: int = field(default=2, metadata={"help": "Layers of the ViT (and of the Q-Former, see below)."})
    qformer_layers: int | None = field(
        default=None,
        metadata={
            "help": "Q-Former layers (default: --num_layers). The composed query's text position sees the image only "
            "through the query tokens, one self-attention hop per layer after the first."
        },
    )
    patch_size: int = field(default=8, metadata={"help": "ViT patch side in pixels."})
    num_query_tokens: int = field(default=8, metadata={"help": "Q-Former query tokens (Q)."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of MRA training (stage 2)."})
    stage1_batch_size: int | None = field(
        default=None, metadata={"help": "Stage-1 batch size (in-batch negatives; default: --batch_size)."}
    )
    stage1_learning_rate: float = field(default=3e-4, metadata={"help": "Stage-1 learning rate."})
    stage1_itm_weight: float = field(
        default=0.0,
        metadata={
            "help": "Stage-1 image-text matching (ITM, BLIP-2's hard negatives) loss weight; 0 (the default) = "
            "contrastive (ITC) only: at this scale ITM stays at its constant-prior loss and costs half the time."
        },
    )
    stage1_itg_weight: float = field(
        default=0.0,
        metadata={
            "help": "Stage-1 image-grounded text generation (ITG, BLIP-2's captioning loss through the fused path) "
            "weight; 0 = off."
        },
    )
    stage1_itm_negatives: str = field(
        default="hard", metadata={"help": "Stage-1 ITM negatives: hard (BLIP-2), random or mixed."}
    )
    stage1_corpus_size: int | None = field(
        default=None,
        metadata={
            "help": "Stage-1 captioned corpus size with --pretrain_from_scratch, drawn apart from the pool (0: the "
            "pool's own captions; default 10000)."
        },
    )
    stage1_edit_pairs: bool = field(
        default=False,
        metadata={
            "help": "Stage-1 corpus as scene / one-edit-variant pairs kept in one batch (in-batch hard negatives)."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "MRA training (stage 2) learning rate."})
    group_by_reference: bool = field(
        default=True,
        metadata={
            "help": "MRA training batches keep each reference's triplets together (MraCirTrainingArguments."
            "group_by_reference: its other targets are the in-batch negatives the text must tell apart)."
        },
    )
    targets_per_reference: int = field(default=3, metadata={"help": "Targets mined per pool image (in the window)."})
    mining_reduce: str = field(
        default="max", metadata={"help": "Token similarity for mining: max (the paper) or mean_max (ColBERT-style)."}
    )
    num_triplets: int | None = field(
        default=None,
        metadata={
            "help": "Triplets trained on, for every window (default 90 percent of what the window mines: pool size x "
            "targets per reference)."
        },
    )
    temperature_min: float = field(
        default=0.01, metadata={"help": "Lower clamp of the learnable logit temperature (both stages)."}
    )
    agent_error_rate: float = field(default=0.1, metadata={"help": "Scene agent: fraction of answers with an error."})
    agent_error_kinds: str | None = field(
        default=None,
        metadata={
            "help": "Scene agent: err like an MLLM, in these kinds ('all' or some of wrong_value, hallucinated_change, "
            "missed_change, wrong_object, refusal, caption_repeat); default: the original wrong-or-missing model."
        },
    )
    agent_verify_error_rate: float | None = field(
        default=None, metadata={"help": "Scene agent: slip rate of its self-check (default half the error rate)."}
    )
    error_study: str | None = field(
        default=None,
        metadata={
            "help": "Run the agent-error study instead (error rates, e.g. 0,0.15,0.3): MRA trained on clean, noisy "
            "and verified triplets, and each verifier's precision and recall (quickstart.error_study)."
        },
    )
    error_study_verifiers: str = field(
        default="agent,cycle",
        metadata={"help": "With --error_study: train on what these keep (agent, cycle, either)."},
    )
    error_study_controls: bool = field(
        default=False,
        metadata={
            "help": "With --error_study: also train on the clean triplets cut to each verified set's size (what the "
            "smaller size alone costs)."
        },
    )
    cycle_k: int = field(
        default=3, metadata={"help": "Cycle check: the target must be in the top k of its reference's window."}
    )
    window: str = field(default="51-60", metadata={"help": "Mining window q1-q2 in the paper's ranks (scaled)."})
    window_reference_pool_size: int = field(
        default=2000, metadata={"help": "Pool size at which paper ranks are used unscaled (linear scaling)."}
    )
    ablation: bool = field(
        default=False, metadata={"help": "Also run the window ablation (the paper's windows, scored on CIRR-style)."}
    )
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for these tiny models)."})
    window_workers: int = field(
        default=2,
        metadata={
            "help": "Processes that train and evaluate the mining windows side by side (each with --num_threads "
            "threads); the results do not depend on it. 1 = one after another in this process."
        },
    )
    device: str = field(
        default="cpu",
        metadata={
            "help": "Where stages 1 and 2 and the evaluation run: cpu (the documented default), cuda or auto "
            "(cuda when available). Mining and the agent stay on the CPU. On the CPU the same seed gives the same "
            "table; GPU kernels give other figures and are not guaranteed to repeat bit for bit."
        },
    )
    show_progress: bool = field(default=True, metadata={"help": "Progress bars."})
    pool_variants_per_root: int = field(
        default=0,
        metadata={
            "help": "0: the default pool of independent scenes (diverse). N > 0: a pool of families of variants, N "
            "images per root scene, each one edit of an earlier member (synthetic_world.variant_pool)."
        },
    )
    pool_duplicate_rate: float = field(
        default=0.0, metadata={"help": "With --pool_variants_per_root: share of near-duplicate re-renders."}
    )
    pool_edit_weights: str = field(
        default="",
        metadata={
            "help": "With --pool_variants_per_root: the kind of edit of a variant, e.g. 'color=0.7,shape=0.05,...' "
            "(kinds: color, shape, size, background, position, add, remove; empty: the benchmarks' mix)."
        },
    )
    balance_types: str | None = field(
        default=None,
        metadata={
            "help": "Keep per-type quotas of the triplets: 'uniform' or a JSON file {type: share} "
            "(mra_triplets.type_balance); draws --balance_oversample times the targets per reference."
        },
    )
    balance_oversample: int = field(
        default=3, metadata={"help": "With --balance_types: candidate targets per reference, times the usual."}
    )
    ablation_windows: list[str] | None = field(
        default=None,
        metadata={"help": "With --ablation: these windows (paper ranks, 'random' or 'adaptive') instead of the six."},
    )
    by_type: bool | None = field(
        default=None,
        metadata={
            "help": "Report the scores per transformation type and the triplets' type mix (results.json "
            "'by_type', 'triplet_types'). Default: on with any of --balance_types, --pool_variants_per_root, "
            "--ablation_windows or --window adaptive, off otherwise (the default run's results.json is unchanged)."
        },
    )

    def __post_init__(self):
        from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import PRETRAINING_SEED_BASE

        if self.seeds is None:
            self.seeds = [] if (self.fast or self.seed is not None) else list(DEFAULT_SEEDS)
        self.seed = 0 if self.seed is None else self.seed
        if any(s >= PRETRAINING_SEED_BASE for s in [self.seed, *self.seeds]):
            raise ValueError(f"seeds from {PRETRAINING_SEED_BASE} on are reserved for pretraining the stand-in")
        if self.stand_in is not None and self.pretrain_from_scratch:
            raise ValueError("--stand_in and --pretrain_from_scratch exclude each other")
        self.pool_size = self.pool_size or 2000
        self.num_queries = self.num_queries or 100
        self.stage1_steps = self.stage1_steps or 2400
        self.train_steps = self.train_steps or 300
        if self.stage1_corpus_size is None:
            self.stage1_corpus_size = 10000
        self.num_triplets = self.num_triplets or int(0.9 * self.pool_size * self.targets_per_reference)
        self.ablation = bool(self.ablation)
        if self.error_study is not None:
            parse_rates(self.error_study)
            if not set(self.error_study_verifiers.split(",")) <= {"agent", "cycle", "either"}:
                raise ValueError(
                    f"--error_study_verifiers: agent, cycle or either, got {self.error_study_verifiers!r}"
                )
        for window in [self.window, *(self.ablation_windows or [])]:
            if window != "adaptive":
                parse_window(window)
        if self.by_type is None:
            self.by_type = bool(
                self.balance_types or self.pool_variants_per_root or self.ablation_windows or self.window == "adaptive"
            )
        if self.window == "adaptive" and self.error_study:
            raise ValueError("--window adaptive: the error study mines fixed ranks; give --window q1-q2 with it")
        if self.balance_oversample < 1:
            raise ValueError(f"--balance_oversample must be >= 1, got {self.balance_oversample}")
        if self.seed_workers < 1:
            raise ValueError(f"--seed_workers must be >= 1, got {self.seed_workers}")
        if any(seed < 0 for seed in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct non-negative integers, got {self.seeds}")
        if self.pool_size < 20:
            raise ValueError(f"--pool_size must be at least 20, got {self.pool_size}")
        if self.mining_reduce not in ("max", "mean_max"):
            raise ValueError(f"--mining_reduce must be 'max' or 'mean_max', got {self.mining_reduce!r}")
        if self.num_threads < 1:
            raise ValueError(f"--num_threads must be >= 1, got {self.num_threads}")
        if self.window_workers < 1:
            raise ValueError(f"--window_workers must be >= 1, got {self.window_workers}")
        if self.stage1_corpus_size != 0 and self.stage1_corpus_size < 2:
            raise ValueError(f"--stage1_corpus_size must be 0 (the pool) or >= 2, got {self.stage1_corpus_size}")
        if self.stage1_edit_pairs and not self.stage1_corpus_size:
            raise ValueError("--stage1_edit_pairs needs --stage1_corpus_size (edit pairs are drawn for that corpus)")
        from mra_cir.quickstart.stage1 import ITM_NEGATIVES

        if self.stage1_itm_negatives not in ITM_NEGATIVES:
            raise ValueError(
                f"--stage1_itm_negatives must be hard, random or mixed, got {self.stage1_itm_negatives!r}"
            )
        if self.stage1_batch_size is not None and self.stage1_batch_size < 2:
            raise ValueError(f"--stage1_batch_size must be >= 2 (in-batch negatives), got {self.stage1_batch_size}")
        if self.stage1_itg_weight < 0:
            raise ValueError(f"--stage1_itg_weight must be >= 0, got {self.stage1_itg_weight}")
        if self.qformer_layers is not None and self.qformer_layers < 1:
            raise ValueError(f"--qformer_layers must be >= 1, got {self.qformer_layers}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here (use cpu or auto)")


def parse_rates(text: str) -> list[float]:
    """`"0,0.15,0.3"` -> `[0.0, 0.15, 0.3]` (`--error_study`; each in [0, 1], a `ValueError` says which is not)."""
    try:
        rates = [float(x) for x in text.replace(" ", ",").split(",") if x]
    except ValueError:
        raise ValueError(f"--error_study must be error rates like 0,0.15,0.3, got {text!r}") from None
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise ValueError(f"--error_study rates must be in [0, 1], got {text!r}")
    return rates


def scale_window(window: str, pool_size: int, reference_pool_size: int) -> tuple[int, int]:
    """The window in ranks of this pool: paper ranks times `pool_size / reference_pool_size`, at least rank 1, at most
    the pool's last rank (`pool_size - 1`); "random" is the whole pool `[1, pool_size - 1]`."""
    parsed = parse_window(window)
    last = pool_size - 1
    if parsed is None:
        return 1, last
    scale = pool_size / reference_pool_size
    q1 = min(last, max(1, math.ceil(parsed[0] * scale)))
    q2 = min(last, max(q1, math.ceil(parsed[1] * scale)))
    return q1, q2


__all__ = [
    "ABLATION_WINDOWS",
    "DEFAULT_SEEDS",
    "STAND_IN",
    "QuickstartArguments",
    "parse_rates",
    "parse_window",
    "scale_window",
]
