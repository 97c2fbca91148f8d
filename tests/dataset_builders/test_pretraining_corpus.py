"""The stand-in's pretraining corpus: reserved seeds, deterministic, and never a held-out benchmark phrasing."""

from __future__ import annotations

import numpy as np
import pytest

from mra_cir.dataset_builders.synthetic_world.edits import modification_text, sample_query
from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import (
    PRETRAINING_SEED_BASE,
    held_out_phrasing_in,
    image_caption_pairs,
    paraphrase_pairs,
)
from mra_cir.dataset_builders.synthetic_world.scenes import benchmark_text, possible_edits, sample_scene


def test_the_check_flags_every_benchmark_text():
    """Every CIRR/CIRCO-style text and every single-edit text holds a held-out phrasing the check finds."""
    rng = np.random.default_rng(5)
    for _ in range(500):
        reference, edits, _ = sample_query(rng)
        text, _ = modification_text(reference, edits, rng)
        assert held_out_phrasing_in(text), text
    for _ in range(200):
        scene = sample_scene(rng, held_out="allow", unique_shapes=True)
        for edit in possible_edits(scene)[:4]:
            for template in (0, 1):
                assert held_out_phrasing_in(benchmark_text(scene, edit, template))


def test_the_corpus_never_uses_a_held_out_phrasing():
    seed = PRETRAINING_SEED_BASE + 17
    texts = [t for pair in paraphrase_pairs(seed, 3000) for t in pair]
    _, captions, _ = image_caption_pairs(seed, 1500)
    found = [(t, held_out_phrasing_in(t)) for t in texts + captions if held_out_phrasing_in(t)]
    assert found == []
    assert len(set(texts)) > 0.9 * len(texts)  # varied phrasings, not a handful of templates
    first, second = zip(*paraphrase_pairs(seed, 500))
    assert sum(a != b for a, b in zip(first, second)) > 450  # a pair is two phrasings


def test_the_corpus_is_deterministic_and_reserved():
    seed = PRETRAINING_SEED_BASE + 3
    images, captions, graphs = image_caption_pairs(seed, 20)
    again = image_caption_pairs(seed, 20)
    assert np.array_equal(images, again[0]) and captions == again[1] and graphs == again[2]
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert list(paraphrase_pairs(seed, 5)) == list(paraphrase_pairs(seed, 5))
    assert image_caption_pairs(seed + 1, 20)[1] != captions
    with pytest.raises(ValueError, match="pretraining seeds start at"):
        image_caption_pairs(7, 2)
    with pytest.raises(ValueError, match="pretraining seeds start at"):
        next(paraphrase_pairs(PRETRAINING_SEED_BASE - 1, 1))
