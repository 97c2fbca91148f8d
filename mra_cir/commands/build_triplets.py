"""`mra-cir build-triplets`: a folder of unlabeled images -> MRA training triplets (Parquet + dataset card).

Example (the paper's agent, MiniCPM-V-2.6, served by vLLM behind the OpenAI-compatible API; the modification request
carries two images, so the server must allow two per prompt; older vLLM versions spell it `image=2`):

    vllm serve openbmb/MiniCPM-V-2_6 --trust-remote-code --max-model-len 4096 \
        --limit-mm-per-prompt '{"image": 2}' --port 8000
    mra-cir build-triplets --images imagenet/train --per-class 100 --model Salesforce/blip2-itm-vit-g --device cuda \
        --agent openai --agent-url http://gpu1:8000/v1 http://gpu2:8000/v1 --agent-model openbmb/MiniCPM-V-2_6 \
        --output triplets/ --num-proc 4

`--device cuda` embeds the images and mines the pairs on the GPU (the default, `cpu`, suits only small folders).

The same agent in-process (one GPU, one request at a time): `--agent transformers --agent-model openbmb/MiniCPM-V-2_6
--agent-trust-remote-code --agent-device cuda`. Without captions (the paper's ablation): `--agent-mode direct`.

A build finishes only when every mined pair has an answer or a counted rejection. When agent requests fail (time-outs,
5xx, an unreachable server), it ends with one line counting them and the command to resume (exit status 1): every
answer received is cached, and the same command asks exactly the failed requests again.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class BuildTripletsArguments:
    images: str = field(metadata={"help": "Folder of unlabeled images (searched recursively)."})
    model: str = field(
        metadata={
            "help": "The model that embeds the images: an MraCirModel folder or a BLIP-2 ITM checkpoint (folder or Hub "
            "id, e.g. Salesforce/blip2-itm-vit-g)."
        }
    )
    output: str = field(metadata={"help": "Output folder: data/*.parquet, README.md (dataset card), summary."})
    device: str = field(default="cpu", metadata={"help": "Where the images are embedded and mined: cpu, cuda, ..."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass when embedding."})
    agent: str = field(
        default="transformers",
        metadata={"help": "Agent backend: transformers, openai, or a registered name (e.g. scene)."},
    )
    agent_model: str | None = field(
        default=None,
        metadata={
            "help": "The agent's model: a local folder (transformers), the served model id (openai), or for scene a "
            "metadata.jsonl with file_name and scene_graph (or a folder holding one)."
        },
    )
    agent_url: list[str] = field(
        default_factory=list, metadata={"help": "OpenAI-compatible base URL(s), round-robin (e.g. http://h:8000/v1)."}
    )
    agent_concurrency: int = field(default=8, metadata={"help": "Requests in flight per process (openai backend)."})
    agent_batch_size: int | None = field(default=None, metadata={"help": "Requests per agent batch."})
    agent_device: str = field(default="cpu", metadata={"help": "Device of the transformers backend."})
    agent_trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "transformers backend: run the agent model's own code (e.g. MiniCPM-V-2.6's model.chat). Only for "
            "checkpoints you trust."
        },
    )
    agent_mode: str = field(
        default="two_step",
        metadata={
            "help": "two_step (caption each image, then compare) or direct (no captions, the paper's ablation)."
        },
    )
    agent_timeout: float = field(default=120.0, metadata={"help": "Seconds per request (openai backend)."})
    agent_retries: int = field(default=4, metadata={"help": "Retries after a failed request (openai backend)."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the API key."})
    prompt_version: str | None = field(
        default=None, metadata={"help": "Registered prompt set (default: the agent mode's, mra-v1 or mra-direct-v1)."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per answer."})
    verify: bool = field(default=False, metadata={"help": "Ask the agent to verify each modification text."})
    q1: int = field(default=51, metadata={"help": "First rank of the mining window."})
    q2: int = field(default=60, metadata={"help": "Last rank of the mining window."})
    targets_per_reference: int = field(default=1, metadata={"help": "Targets sampled per reference."})
    reduce: str = field(default="max", metadata={"help": "Token similarity reduction: max or mean_max."})
    seed: int = field(default=0, metadata={"help": "Seed of the targets drawn in the mining window."})
    max_images: int | None = field(
        default=None, metadata={"help": "Use at most N images: a random sample drawn with --sample-seed."}
    )
    per_class: int | None = field(
        default=None,
        metadata={
            "help": "Use at most K images of each class folder (first-level sub-folder), drawn with --sample-seed."
        },
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the --per-class / --max-images sample."})
    pairs_per_shard: int = field(default=256, metadata={"help": "Pairs per generation shard."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes generating shards in parallel."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "datasets cache + work folder (default: <output>/.cache)."}
    )
    agent_cache: str | None = field(default=None, metadata={"help": "Response cache file (sqlite)."})
    allow_failures: bool = field(
        default=False,
        metadata={"help": "Finish even if agent requests failed (those pairs are dropped and counted)."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Recompute features, mined pairs and the dataset (agent answers stay cached)."},
    )
    save_arrow: bool = field(default=False, metadata={"help": "Also save_to_disk into <output>/arrow."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo id."})
    private: bool = field(default=True, metadata={"help": "Private Hub repo."})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = HfArgumentParser(BuildTripletsArguments).parse_args_into_dataclasses(args=argv)
    import os
    from pathlib import Path

    from mra_cir.dataset_builders.agents import AgentError
    from mra_cir.dataset_builders.mra_triplets import MraTriplets
    from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets, push_triplets_to_hub
    from mra_cir.dataset_builders.mra_triplets.summary import IncompleteBuildError

    resume = f"resume with: mra-cir build-triplets {shlex.join(argv)}"
    options: dict = {}
    if args.agent_batch_size:
        options["batch_size"] = args.agent_batch_size
    if args.agent == "openai":
        if not args.agent_url:
            print("build-triplets: --agent openai needs --agent-url URL [URL ...]", file=sys.stderr)
            return 2
        options.update(
            base_urls=args.agent_url, max_concurrency=args.agent_concurrency, api_key_env=args.api_key_env,
            timeout=args.agent_timeout, max_retries=args.agent_retries,
        )  # fmt: skip
    elif args.agent == "transformers":
        options["device"] = args.agent_device
        if args.agent_trust_remote_code:
            options["trust_remote_code"] = True
    if args.agent in ("openai", "transformers") and not args.agent_model:
        print(f"build-triplets: --agent {args.agent} needs --agent-model", file=sys.stderr)
        return 2
    cache_dir = args.cache_dir or os.path.join(args.output, ".cache")
    try:
        builder = MraTriplets(
            cache_dir=cache_dir, agent_options=options, agent_cache=args.agent_cache, images=args.images,
            embedding_model=args.model, reduce=args.reduce, q1=args.q1, q2=args.q2,
            targets_per_reference=args.targets_per_reference, seed=args.seed, agent=args.agent,
            agent_model=args.agent_model, agent_mode=args.agent_mode, prompt_version=args.prompt_version,
            max_new_tokens=args.max_new_tokens, max_images=args.max_images, per_class=args.per_class,
            sample_seed=args.sample_seed, verify=args.verify, pairs_per_shard=args.pairs_per_shard,
            allow_failures=args.allow_failures, overwrite=args.overwrite, device=args.device,
            embedding_batch_size=args.batch_size,
        )  # fmt: skip
        builder.download_and_prepare(num_proc=args.num_proc)
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"build-triplets: interrupted; the answers received are cached, nothing final was written; {resume}")
        return 130
    except IncompleteBuildError as error:
        _close_progress_bars()
        print(f"build-triplets: {error}; {resume}", file=sys.stderr)
        return 1
    except AgentError as error:
        _close_progress_bars()
        print(f"build-triplets: agent failed: {error}; {resume}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, OSError) as error:  # inputs: one line naming them, no traceback
        _close_progress_bars()
        print(f"build-triplets: error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    summary = builder.build_summary()
    if summary["triplets"] == 0:
        why = f"every pair was rejected ({_rejections(summary)})" if summary["pairs_mined"] else "no pair was mined"
        print(f"build-triplets: 0 triplets: {why}", file=sys.stderr)
        return 1
    dataset = builder.as_dataset(split="train")
    export_triplets(
        dataset, args.output, config=builder.config_dict(), summary=summary, save_arrow=args.save_arrow,
        repo_id=args.push_to_hub or "<user>/<repo>",
    )  # fmt: skip
    if args.push_to_hub:
        push_triplets_to_hub(dataset, args.push_to_hub, builder.config_dict(), summary, private=args.private)
    print(_format_summary(summary, Path(args.output)))
    if summary["pairs_failed"]:
        print(
            f"build-triplets: {summary['pairs_failed']} pair(s) whose requests failed were left out "
            "(--allow-failures); the same command without it asks them again"
        )
    return 0


def _close_progress_bars() -> None:
    """Close the progress bars an error left open, so that the one-line message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _rejections(summary: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary["rejected"].items()) or "none"


def _format_summary(summary: dict, output) -> str:
    unreadable = summary.get("unreadable_folders") or []
    lines = [
        f"images: {summary['images_found']} found, {summary['images_skipped']} skipped, "
        f"{summary['duplicates']} duplicates"
        + (f"; {len(unreadable)} unreadable folder(s) left out: " if unreadable else "")
        + ", ".join(f"{name} ({reason})" for name, reason in unreadable),
        f"pairs mined: {summary['pairs_mined']}",
        f"agent: {summary['agent_calls']} calls made, {summary['agent_cached']} cached, "
        f"{summary['agent_failed']} failed  {json.dumps(summary['agent_calls_by_step'])}",
        "rejected: " + _rejections(summary),
        f"triplets: {summary['triplets']} -> {output}",
    ]
    if not summary["prepared_in_this_run"]:
        lines.insert(0, "(already prepared: statistics of the run that built it)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
