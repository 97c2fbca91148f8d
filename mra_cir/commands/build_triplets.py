"""`mra-cir build-triplets`: a folder of unlabeled images -> MRA training triplets (Parquet + dataset card).

Example (the paper's agent, MiniCPM-V-2.6, served by vLLM behind the OpenAI-compatible API; the modification request
carries two images, so the server must allow two per prompt; older vLLM versions spell it `image=2`):

    vllm serve openbmb/MiniCPM-V-2_6 --trust-remote-code --max-model-len 4096 \
        --limit-mm-per-prompt '{"image": 2}' --port 8000
    mra-cir build-triplets --images imagenet/train --per-class 100 --model Salesforce/blip2-itm-vit-g --device cuda \
        --agent openai --agent-url http://gpu1:8000/v1 http://gpu2:8000/v1 --agent-model openbmb/MiniCPM-V-2_6 \
        --output triplets/ --num-proc 4

The job itself: `mra_cir.pipelines.build_triplets`. `--device cuda` embeds the images and mines the pairs on the GPU (the default, `cpu`, suits only small folders).

The same agent in-process (one GPU, one request at a time): `--agent transformers --agent-model openbmb/MiniCPM-V-2_6
--agent-trust-remote-code --agent-device cuda`. Without captions (the paper's ablation): `--agent-mode direct`.

A build finishes only when every mined pair has an answer or a counted rejection. When agent requests fail (time-outs,
5xx, an unreachable server), it ends with one line counting them and the command to resume (exit status 1): every
answer received is cached, and the same command asks exactly the failed requests again.
"""

from __future__ import annotations

import shlex
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.agent_arguments import AgentArguments
from mra_cir.pipelines.triplets import (
    AgentError,
    BuildTripletsArguments,
    IncompleteBuildError,
    NoTripletsError,
    build_triplets,
    close_progress_bars,
    format_summary,
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, agent_args = HfArgumentParser((BuildTripletsArguments, AgentArguments)).parse_args_into_dataclasses(
        args=argv
    )
    resume = f"resume with: mra-cir build-triplets {shlex.join(argv)}"
    try:
        agent_args.check()
    except ValueError as error:
        print(f"build-triplets: {error}", file=sys.stderr)
        return 2
    try:
        result = build_triplets(args, agent_args)
    except KeyboardInterrupt:
        close_progress_bars()
        print(f"build-triplets: interrupted; the answers received are cached, nothing final was written; {resume}")
        return 130
    except IncompleteBuildError as error:
        close_progress_bars()
        print(f"build-triplets: {error}; {resume}", file=sys.stderr)
        return 1
    except AgentError as error:
        close_progress_bars()
        print(f"build-triplets: agent failed: {error}; {resume}", file=sys.stderr)
        return 1
    except NoTripletsError as error:
        print(f"build-triplets: {error}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, OSError) as error:  # inputs: one line naming them, no traceback
        close_progress_bars()
        print(f"build-triplets: error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    summary = result.summary
    print(format_summary(summary, result.output))
    if summary["pairs_failed"]:
        print(
            f"build-triplets: {summary['pairs_failed']} pair(s) whose requests failed were left out "
            "(--allow-failures); the same command without it asks them again"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
