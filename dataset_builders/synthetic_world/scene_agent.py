"""`SceneGraphAgent`: the MRA agent of the synthetic world, answering from scene graphs instead of pixels.

It plays the multimodal LLM of the paper in [`~mra_cir.dataset_builders.synthetic_world`]: step 1 captions an image from its
scene graph, step 2 describes the difference between a reference and a target (objects matched by their left/right
slot: colour, shape and size changes, added, removed and moved objects, the background). With `error_rate > 0` it
behaves like an imperfect MLLM: that fraction of answers has one attribute wrong (a wrong value) or missing (a dropped
attribute or change); with `error_kinds` (e.g. "all") it errs in the kinds real MLLM outputs show ([`.agent_errors`]:
wrong value, hallucinated change, missed change, wrong object, refusal, a caption error repeated in the text). Errors
are deterministic in `(seed, image, step)`, so re-runs and caches agree. `known_error` says which error a text carries
("" for a true text), for the world's `agent_error` column.

`verify` (the optional self-check step) is the same fallible model checking its own answer, not an oracle: with
probability `verify_error_rate` (default `error_rate / 2`) it re-reads one of the two images wrongly, the way it
misreads that image in its captions (the same model repeats its own perceptual mistakes, so a caption error its text
repeats often passes its check, and a true text about a misread image is rejected), and independently with the same
probability it answers "yes" without checking (the yes-bias MLLMs show on yes/no questions, POPE). Half the writing
error rate because a grounded yes/no question is easier for an MLLM than an open description (POPE-style yes/no
accuracies of 85-88 %); set `verify_error_rate=error_rate` for a checker as fallible as the writer.

Its wording (phrasings, namings, joins, captions) is in [`.agent_wording`], disjoint from the benchmarks' held-out phrasings.

Example:

```python
>>> from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent
>>> agent = SceneGraphAgent.from_dataset(world.pool, error_rate=0.1, seed=0)
>>> agent.caption([AgentImage(id="pool_00000", path="", sha256="")])
['a large green cross on the left and a large white circle on the right on a black background']
```
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..agents.base import AgentBackend, AgentImage, ModificationRequest
from .agent_errors import ERROR_KINDS, REFUSALS, apply_error, draw_error, misread, parse_error_kinds, wrong_value
from .agent_wording import (
    AGENT_TEMPLATES,
    JOIN_PATTERN,
    JOINS,
    NAMINGS,
    agent_caption,
    agent_texts,
    other_objects,
    phrase,
    scene_changes,
)

NO_CHANGE = REFUSALS[0]  # "no change"


class SceneGraphAgent(AgentBackend):
    """An [`AgentBackend`] that reads scene graphs (the synthetic world's stand-in for a multimodal LLM).

    Args:
        scene_graphs (`Mapping[str, str | dict]`): image id -> scene graph (JSON string or dict).
        sha256_to_id (`Mapping[str, str]`, *optional*): image hash -> image id, to find images whose id differs
            (a renamed copy of the file).
        error_rate (`float`, defaults to 0.0): probability that an answer has one wrong or missing attribute.
        seed (`int`, defaults to 0): seed of the error draws and of the phrasing choice.
        error_kinds (`str | Sequence[str]`, *optional*): the MLLM-like error model ([`.agent_errors`]): "all" or some
            of `ERROR_KINDS`, each erring answer's kind drawn uniformly among those that apply. Default: the original
            model (a wrong colour/shape value or a dropped change; kept so the quickstart's figures stay as published).
        verify_error_rate (`float`, *optional*): the self-check's slip rate (see the module docstring); default
            `error_rate / 2`.
        **kwargs: [`AgentBackend`] arguments (`prompts`, `batch_size`, `max_new_tokens`).

    An image neither found by `AgentImage.id` nor by `AgentImage.sha256` gets `None` (a failed request).
    """

    backend_name = "scene"
    model_name = "scene-graph-v3"
    batch_size = 256

    def __init__(
        self,
        scene_graphs: Mapping[str, str | dict],
        sha256_to_id: Mapping[str, str] | None = None,
        error_rate: float = 0.0,
        seed: int = 0,
        error_kinds: str | Sequence[str] | None = None,
        verify_error_rate: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"SceneGraphAgent.error_rate must be in [0, 1], got {error_rate}")
        if verify_error_rate is not None and not 0.0 <= verify_error_rate <= 1.0:
            raise ValueError(f"SceneGraphAgent.verify_error_rate must be in [0, 1], got {verify_error_rate}")
        self.scene_graphs = {k: json.loads(v) if isinstance(v, str) else dict(v) for k, v in scene_graphs.items()}
        self.sha256_to_id = dict(sha256_to_id or {})
        self.error_rate = float(error_rate)
        self.seed = int(seed)
        self.error_kinds = None if error_kinds is None else parse_error_kinds(error_kinds)
        self.verify_error_rate = self.error_rate / 2 if verify_error_rate is None else float(verify_error_rate)
        # the error settings change the answers: they are part of the cache key through model_name
        self.model_name = f"{type(self).model_name}-err{self.error_rate:g}-seed{self.seed}"
        if self.error_kinds is not None:
            self.model_name += f"-kinds{'+'.join(self.error_kinds)}"
        if verify_error_rate is not None:
            self.model_name += f"-verr{self.verify_error_rate:g}"

    @classmethod
    def from_dataset(cls, dataset, id_column: str = "id", image_column: str = "image", **kwargs) -> SceneGraphAgent:
        """Build from a world part (`id`, `image`, `scene_graph` columns); hashes are those of the stored bytes."""
        import datasets

        for column in (id_column, image_column, "scene_graph"):
            if column not in dataset.column_names:
                raise ValueError(f"SceneGraphAgent.from_dataset: the dataset has no column {column!r}")
        raw = dataset.cast_column(image_column, datasets.Image(decode=False))
        sha = {}
        for row in raw:
            data = row[image_column].get("bytes")
            if data is None and row[image_column].get("path"):
                with open(row[image_column]["path"], "rb") as handle:
                    data = handle.read()
            if data is not None:
                sha[hashlib.sha256(data).hexdigest()] = row[id_column]
        return cls(dict(zip(dataset[id_column], dataset["scene_graph"])), sha256_to_id=sha, **kwargs)

    # ---------------------------------------------------------------------------------------------------- lookup
    def scene_of(self, image: AgentImage) -> dict | None:
        """The scene graph of `image`, by id, then by hash (None when unknown)."""
        if image.id in self.scene_graphs:
            return self.scene_graphs[image.id]
        key = self.sha256_to_id.get(image.sha256)
        return self.scene_graphs.get(key) if key is not None else None

    def _rng(self, *keys: str) -> np.random.Generator:
        digest = hashlib.sha256("\x1f".join((str(self.seed), *keys)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    @staticmethod
    def _key(image: AgentImage) -> str:
        return image.sha256 or image.id

    # ----------------------------------------------------------------------------------------------------- steps
    def caption(self, images: Sequence[AgentImage]) -> list[str | None]:
        out: list[str | None] = []
        for image in images:
            graph = self.scene_of(image)
            if graph is None:
                out.append(None)
                continue
            out.append(agent_caption(self._captioned(self._key(image), graph)))
        return out

    def _captioned(self, key: str, graph: dict) -> dict:
        """The scene as step 1 describes it: with `error_rate`, misread (the original model: its own corruption draw;
        the MLLM-like model: the image's one misreading, which its caption-led texts and its self-check share)."""
        rng = self._rng("caption", key)
        if rng.random() >= self.error_rate:
            return graph
        return misread(graph, rng) if self.error_kinds is None else self._misread(key, graph)

    def _misread(self, key: str, graph: dict) -> dict:
        """How this agent misreads the image `key` when it does (always the same way: one draw per image)."""
        return misread(graph, self._rng("misread", key))

    def modify(self, requests: Sequence[ModificationRequest]) -> list[str | None]:
        return [self._answer(request)[0] for request in requests]

    def known_error(self, request: ModificationRequest, text: str) -> str | None:
        """The error `text` carries, as only the world knows: "" for a true text (what an error-free agent could say),
        else the kind drawn for the pair (`ERROR_KINDS`; "wrong_value" / "missed_change" in the original model, and
        "unknown" for a wrong text this agent did not write); None when an image is unknown."""
        reference, target = self.scene_of(request.reference), self.scene_of(request.target)
        if reference is None or target is None:
            return None
        if self.true_text(text, reference, target):
            return ""
        answer, kind = self._answer(request)
        return kind if kind and answer == text else "unknown"

    def _answer(self, request: ModificationRequest) -> tuple[str | None, str | None]:
        """`(text, error kind or None)` for one pair."""
        reference, target = self.scene_of(request.reference), self.scene_of(request.target)
        if reference is None or target is None:
            return None, None
        ref_key = self._key(request.reference)
        rng = self._rng("modify", ref_key, self._key(request.target))
        changes = scene_changes(reference, target)
        kind, fixed = None, None
        if self.error_kinds is None:
            if changes and rng.random() < self.error_rate:
                changes, kind = self._corrupt_changes(changes, rng)
        elif rng.random() < self.error_rate:
            # step 2 reads the reference as step 1's caption does: misread when that caption was wrong
            captioned = self._captioned(ref_key, reference) if request.reference_caption else reference
            caption_misread = captioned if captioned is not reference else None
            kind = draw_error(rng, self.error_kinds, changes, reference, target, caption_misread)
            if kind is not None:
                changes, reference, fixed = apply_error(kind, changes, reference, target, caption_misread, rng)
        if fixed is not None:
            return fixed, kind
        wording = self._rng("wording", ref_key, self._key(request.target))
        phrases = [
            phrase(
                c,
                int(wording.integers(len(AGENT_TEMPLATES[c["kind"]]))),
                int(wording.integers(len(NAMINGS))),
                other_objects(c, reference),
            )
            for c in changes
        ]
        order = wording.permutation(len(phrases))
        text = phrases[order[0]] if phrases else NO_CHANGE
        for i in order[1:]:
            text += JOINS[int(wording.integers(len(JOINS)))] + phrases[i]
        return text, kind

    def verify(self, requests: Sequence[ModificationRequest], modifications: Sequence[str]) -> list[str | None]:
        """The self-check: "yes" when the text is what an error-free agent could have said of the two images *as this
        check reads them* (any phrasing, any order), else "no"; with `verify_error_rate` it misreads one image (its
        own misreading of it) or says "yes" unchecked (module docstring). Exact when `verify_error_rate` is 0."""
        if len(requests) != len(modifications):
            raise ValueError(f"verify got {len(requests)} requests and {len(modifications)} modifications")
        out: list[str | None] = []
        for request, text in zip(requests, modifications):
            reference, target = self.scene_of(request.reference), self.scene_of(request.target)
            if reference is None or target is None:
                out.append(None)
                continue
            keys = (self._key(request.reference), self._key(request.target))
            rng = self._rng("verify", *keys, text)
            slip = self.verify_error_rate
            if rng.random() < slip:  # it re-reads one of the images wrongly, as it misreads that image elsewhere
                if rng.random() < 0.5:
                    reference = self._misread(keys[0], reference)
                else:
                    target = self._misread(keys[1], target)
            ok = self.true_text(text, reference, target) or rng.random() < slip  # or says yes unchecked
            out.append("yes" if ok else "no")
        return out

    @staticmethod
    def true_text(text: str, reference: dict, target: dict) -> bool:
        """Whether `text` is what an error-free agent could say of reference -> target (any phrasing, any order)."""
        changes = scene_changes(reference, target)
        if not changes:
            return text == NO_CHANGE
        said = set(re.split(JOIN_PATTERN, text))
        return len(said) == len(changes) and all(
            any(
                phrase(c, t, n, other_objects(c, reference)) in said
                for t in range(len(AGENT_TEMPLATES[c["kind"]]))
                for n in range(len(NAMINGS))
            )
            for c in changes
        )

    # ---------------------------------------------------------------------------------------------------- errors
    @staticmethod
    def _wrong(rng: np.random.Generator, attribute: str, *exclude: str) -> str:
        return wrong_value(rng, attribute, *exclude)

    def _corrupt_changes(self, changes: list[dict], rng: np.random.Generator) -> tuple[list[dict], str]:
        """Missing (one change dropped; a lone add/remove/move/replace becomes "no change") or wrong (the new value
        of an attribute change replaced by another value, never the old one)."""
        # only colour and shape have a third value to be wrong with (sizes and backgrounds have two)
        wrongable = [i for i, c in enumerate(changes) if c["kind"] in ("color", "shape")]
        if not wrongable or (len(changes) > 1 and rng.random() < 0.5):
            drop = int(rng.integers(len(changes)))
            return [c for i, c in enumerate(changes) if i != drop], "missed_change"
        i = wrongable[int(rng.integers(len(wrongable)))]
        change = dict(changes[i])
        old = change["obj"][change["kind"]]
        change["new"] = self._wrong(rng, change["kind"], change["new"], old)
        return [*changes[:i], change, *changes[i + 1 :]], "wrong_value"


def make_scene_agent(
    model: str | None = None, scene_graphs: Mapping[str, str | dict] | None = None, **kwargs
) -> SceneGraphAgent:
    """The registry's factory of the `scene` backend (`make_agent("scene", ...)`, `--agent scene`).

    Args:
        model (`str`, *optional*): where the scene graphs are (the builder passes `--agent-model` here): a
            `metadata.jsonl` in the Hugging Face imagefolder convention (one JSON object per line with `file_name`,
            the image's path relative to the file's folder, and `scene_graph`, a JSON string or object), or a folder
            holding one. Images are found by id (`file_name`) and by the SHA-256 of the file it names.
        scene_graphs (`Mapping[str, str | dict]`, *optional*): image id -> scene graph, given directly.
        **kwargs: [`SceneGraphAgent`] arguments (`error_rate`, `seed`, `prompts`, `batch_size`, `max_new_tokens`).

    Raises:
        `ValueError` saying what the scene agent needs when neither is given, or naming the file and line of a bad
        record.
    """
    if scene_graphs is not None:
        return SceneGraphAgent(scene_graphs, **kwargs)
    if model is None:
        raise ValueError(
            "the scene agent answers from scene graphs: give --agent-model PATH, a metadata.jsonl (one JSON object per "
            "line with 'file_name' and 'scene_graph', the imagefolder convention) or a folder holding one"
        )
    from pathlib import Path

    from mra_cir.retrieval.content_hashes import ContentHashes

    path = Path(model)
    if path.is_dir():
        path = path / "metadata.jsonl"
    if not path.is_file():
        raise ValueError(f"scene agent: {path} not found (expected a metadata.jsonl with file_name and scene_graph)")
    graphs: dict[str, str | dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error})") from None
        if not isinstance(record, dict) or "file_name" not in record or "scene_graph" not in record:
            raise ValueError(f"{path}, line {number}: needs 'file_name' and 'scene_graph'")
        graphs[str(record["file_name"])] = record["scene_graph"]
    files = [(name, path.parent / name) for name in graphs if (path.parent / name).is_file()]
    digests = ContentHashes().sha256_many([file for _, file in files])
    agent = SceneGraphAgent(graphs, sha256_to_id={d: name for (name, _), d in zip(files, digests)}, **kwargs)
    content = hashlib.sha256(json.dumps(agent.scene_graphs, sort_keys=True).encode()).hexdigest()[:12]
    agent.model_name = f"{agent.model_name}-graphs{content}"  # other graphs, other answers: another cache key
    return agent


__all__ = [
    "AGENT_TEMPLATES",
    "ERROR_KINDS",
    "NO_CHANGE",
    "SceneGraphAgent",
    "agent_caption",
    "agent_texts",
    "make_scene_agent",
    "scene_changes",
]
