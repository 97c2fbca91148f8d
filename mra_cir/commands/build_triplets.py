"""`mra-cir build-triplets`: a folder of unlabeled images -> MRA training triplets (Parquet + dataset card).

Example (the paper's agent, MiniCPM-V-2.6, served by vLLM behind the OpenAI-compatible API):

    vllm serve openbmb/MiniCPM-V-2_6 --trust-remote-code --max-model-len 4096 --port 8000
    mra-cir build-triplets --images photos/ --model blip2-mra-cir/ --agent openai \
        --agent-url http://gpu1:8000/v1 http://gpu2:8000/v1 --agent-model openbmb/MiniCPM-V-2_6 \
        --output triplets/ --num-proc 4
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class BuildTripletsArguments:
    images: str = field(metadata={"help": "Folder of unlabeled images (searched recursively)."})
    model: str = field(metadata={"help": "Folder of the MraCirModel (+ processor) used to embed the images."})
    output: str = field(metadata={"help": "Output folder: data/*.parquet, README.md (dataset card), summary."})
    agent: str = field(
        default="transformers",
        metadata={"help": "Agent backend: transformers, openai, or a registered name (e.g. scene)."},
    )
    agent_model: str | None = field(
        default=None, metadata={"help": "The agent's model: a local folder (transformers) or the served model id."}
    )
    agent_url: list[str] = field(
        default_factory=list, metadata={"help": "OpenAI-compatible base URL(s), round-robin (e.g. http://h:8000/v1)."}
    )
    agent_concurrency: int = field(default=8, metadata={"help": "Requests in flight per process (openai backend)."})
    agent_batch_size: int | None = field(default=None, metadata={"help": "Requests per agent batch."})
    agent_device: str = field(default="cpu", metadata={"help": "Device of the transformers backend."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the API key."})
    prompt_version: str = field(default="mra-v1", metadata={"help": "Registered prompt set."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per answer."})
    verify: bool = field(default=False, metadata={"help": "Ask the agent to verify each modification text."})
    q1: int = field(default=51, metadata={"help": "First rank of the mining window."})
    q2: int = field(default=60, metadata={"help": "Last rank of the mining window."})
    targets_per_reference: int = field(default=1, metadata={"help": "Targets sampled per reference."})
    reduce: str = field(default="max", metadata={"help": "Token similarity reduction: max or mean_max."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    max_images: int | None = field(default=None, metadata={"help": "Use only the first N images (sorted)."})
    pairs_per_shard: int = field(default=256, metadata={"help": "Pairs per generation shard."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes generating shards in parallel."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "datasets cache + work folder (default: <output>/.cache)."}
    )
    agent_cache: str | None = field(default=None, metadata={"help": "Response cache file (sqlite)."})
    save_arrow: bool = field(default=False, metadata={"help": "Also save_to_disk into <output>/arrow."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo id."})
    private: bool = field(default=True, metadata={"help": "Private Hub repo."})


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(BuildTripletsArguments).parse_args_into_dataclasses(args=argv)
    import os
    from pathlib import Path

    from mra_cir.dataset_builders.agents import AgentError
    from mra_cir.dataset_builders.mra_triplets import MraTriplets
    from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets, push_triplets_to_hub

    options: dict = {}
    if args.agent_batch_size:
        options["batch_size"] = args.agent_batch_size
    if args.agent == "openai":
        if not args.agent_url:
            print("build-triplets: --agent openai needs --agent-url URL [URL ...]", file=sys.stderr)
            return 2
        options.update(base_urls=args.agent_url, max_concurrency=args.agent_concurrency, api_key_env=args.api_key_env)
    elif args.agent == "transformers":
        options["device"] = args.agent_device
    if args.agent in ("openai", "transformers") and not args.agent_model:
        print(f"build-triplets: --agent {args.agent} needs --agent-model", file=sys.stderr)
        return 2
    cache_dir = args.cache_dir or os.path.join(args.output, ".cache")
    builder = MraTriplets(
        cache_dir=cache_dir,
        agent_options=options,
        agent_cache=args.agent_cache,
        images=args.images,
        embedding_model=args.model,
        reduce=args.reduce,
        q1=args.q1,
        q2=args.q2,
        targets_per_reference=args.targets_per_reference,
        seed=args.seed,
        agent=args.agent,
        agent_model=args.agent_model,
        prompt_version=args.prompt_version,
        max_new_tokens=args.max_new_tokens,
        max_images=args.max_images,
        verify=args.verify,
        pairs_per_shard=args.pairs_per_shard,
    )
    try:
        builder.download_and_prepare(num_proc=args.num_proc)
    except AgentError as error:
        print(f"build-triplets: agent failed: {error}", file=sys.stderr)
        return 1
    dataset = builder.as_dataset(split="train")
    summary = builder.build_summary()
    export_triplets(
        dataset, args.output, config=builder.config_dict(), summary=summary, save_arrow=args.save_arrow,
        repo_id=args.push_to_hub or "<user>/<repo>",
    )  # fmt: skip
    if args.push_to_hub:
        push_triplets_to_hub(dataset, args.push_to_hub, builder.config_dict(), summary, private=args.private)
    print(_format_summary(summary, Path(args.output)))
    return 0


def _format_summary(summary: dict, output) -> str:
    lines = [
        f"images: {summary['images_found']} found, {summary['images_skipped']} skipped, "
        f"{summary['duplicates']} duplicates",
        f"pairs mined: {summary['pairs_mined']}",
        f"agent: {summary['agent_calls']} calls made, {summary['agent_cached']} cached, "
        f"{summary['agent_failed']} failed  {json.dumps(summary['agent_calls_by_step'])}",
        "rejected: " + (", ".join(f"{k}={v}" for k, v in summary["rejected"].items()) or "none"),
        f"triplets: {summary['triplets']} -> {output}",
    ]
    if not summary["prepared_in_this_run"]:
        lines.insert(0, "(already prepared: statistics of the run that built it)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
