"""`mra-cir search`: rank a gallery index with a composed query (reference image + modification text).

The job itself: `mra_cir.pipelines.search` (ranking through `mra_cir.retrieval.encoding.rank_gallery`, the code
evaluation and the app use). The index directory is a `mra_cir.retrieval.GalleryIndex` (`features.safetensors`,
`ids.json`, `gallery_index.json`). The model is `--model`, else the `model_path` recorded in the index, else the index directory
itself when it holds a saved model. With `--images DIR` and no index yet, the index is built from that folder (and
saved with the model path). Prints one JSON object: the query and the top-k ids with their scores.

Example:

```bash
mra-cir search --index gallery/ --model out/mra-cir --images photos/ --image photos/dress.jpg --text "in red" --k 5
```
"""

from __future__ import annotations

import json
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.gallery_search import SearchArguments, search


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(SearchArguments).parse_args_into_dataclasses(args=argv)
    try:
        result = search(args)
    except (OSError, ValueError) as err:  # FileNotFoundError included: a missing folder, an unreachable Hub id
        print(f"mra-cir search: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
