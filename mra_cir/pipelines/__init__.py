"""The library's jobs, one function each, that the `mra-cir` commands parse arguments for and call:

| job | function (arguments) | command |
|---|---|---|
| fine-tune on triplets | `train(ModelArguments, DataArguments, MraCirTrainingArguments)`; `parse_train_args` | `train` |
| build triplets | `build_triplets(BuildTripletsArguments, AgentArguments)` | `build-triplets` |
| mine pairs | `mine(MineArguments)` | `mine` |
| window ablation | `window_sweep(WindowSweepArguments, AgentArguments)` | `window-sweep` |
| composed search | `search(SearchArguments)` | `search` |
| zero-shot evaluation | `evaluate(EvaluateArguments)`, `evaluate_rankings(EvaluateRankingsArguments)` | `evaluate`, `evaluate-rankings` |

Every job takes dataclasses (the commands' options, also usable from Python) and raises `ValueError` / `OSError` naming
the bad input; the commands turn those into one line and an exit status. Names are imported on first use, so
`import mra_cir.pipelines` is cheap.

Example:

```python
>>> from mra_cir.pipelines import SearchArguments, search
>>> search(SearchArguments(index="gallery/", image="photos/dress.jpg", text="in red", images="photos/"))["results"]
```
"""

from __future__ import annotations

import importlib

#: public name -> the module of this package that defines it
_EXPORTS = {
    "AgentArguments": "agent_arguments",
    "ModelArguments": "training",
    "DataArguments": "training",
    "parse_train_args": "training",
    "train": "training",
    "BuildTripletsArguments": "triplets",
    "build_triplets": "triplets",
    "MineArguments": "mining",
    "mine": "mining",
    "WindowSweepArguments": "sweep",
    "SweepAgentArguments": "sweep",
    "window_sweep": "sweep",
    "SearchArguments": "gallery_search",
    "search": "gallery_search",
    "EvaluateArguments": "evaluation",
    "EvaluateRankingsArguments": "evaluation",
    "evaluate": "evaluation",
    "evaluate_rankings": "evaluation",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
