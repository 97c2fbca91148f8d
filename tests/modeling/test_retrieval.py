"""The one encoding and ranking path: `encode_images`, `encode_queries` (every query mode) and `rank_gallery`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from reference_similarity import brute_force_token_similarity

from mra_cir.retrieval.encoding import QUERY_MODES, encode_images, encode_queries, rank_gallery
from mra_cir.retrieval.gallery_index import GalleryIndex

TEXTS = ["make it red", "add a small circle", "remove the square", "change it to blue"]


@pytest.fixture(scope="module")
def gallery():
    return [random_image(i, size=32) for i in range(9)]


def test_encode_images_matches_the_model_in_any_batching(tiny_model, tiny_processor, gallery):
    direct = tiny_model.get_image_features(tiny_processor(images=gallery)["pixel_values"])
    for batch_size in (1, 4, 9):
        batched = encode_images(tiny_model, tiny_processor, gallery, batch_size=batch_size)
        assert batched.shape == direct.shape and batched.dtype == torch.float32
        torch.testing.assert_close(batched, direct, atol=1e-5, rtol=1e-4)
    assert encode_images(tiny_model, tiny_processor, gallery[:3], output_dtype=None).dtype == direct.dtype


def test_query_modes_are_what_they_say(tiny_model, tiny_processor, gallery):
    refs = gallery[:4]
    inputs = tiny_processor(images=refs, text=TEXTS)
    composed = encode_queries(tiny_model, tiny_processor, refs, TEXTS, "composed", batch_size=3)
    expected = tiny_model.get_composed_features(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(composed, expected, atol=1e-5, rtol=1e-4)
    text = encode_queries(tiny_model, tiny_processor, None, TEXTS, "text")
    torch.testing.assert_close(text, tiny_model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))
    image = encode_queries(tiny_model, tiny_processor, refs, None, "image")
    torch.testing.assert_close(image, tiny_model.get_image_features(inputs["pixel_values"]), atol=1e-5, rtol=1e-4)
    # late fusion: the normalised sum of each normalised image token and the text feature, by hand
    fusion = encode_queries(tiny_model, tiny_processor, refs, TEXTS, "image_text_fusion")
    by_hand = F.normalize(image + text[:, None, :], dim=-1)
    torch.testing.assert_close(fusion, by_hand, atol=1e-5, rtol=1e-4)
    # precomputed reference tokens are used as they are
    tokens = F.normalize(torch.randn(4, *image.shape[1:]), dim=-1)
    assert torch.equal(encode_queries(tiny_model, tiny_processor, None, None, "image", image_features=tokens), tokens)


def test_several_texts_per_query_are_averaged(tiny_model, tiny_processor, gallery):
    refs = gallery[:2]
    pairs = [[TEXTS[0], TEXTS[1]], [TEXTS[2], TEXTS[3]]]
    both = encode_queries(tiny_model, tiny_processor, refs, pairs, "composed")
    first = encode_queries(tiny_model, tiny_processor, refs, [p[0] for p in pairs], "composed")
    second = encode_queries(tiny_model, tiny_processor, refs, [p[1] for p in pairs], "composed")
    torch.testing.assert_close(both, F.normalize(first + second, dim=-1), atol=1e-5, rtol=1e-4)


def test_rank_gallery_is_the_exact_max_sim_ranking(tiny_model, tiny_processor, gallery):
    ids = [f"g{i}" for i in range(len(gallery))]
    index = GalleryIndex(encode_images(tiny_model, tiny_processor, gallery), ids)
    refs, exclude = gallery[:4], ids[:4]
    for mode in QUERY_MODES:
        ranking = rank_gallery(tiny_model, tiny_processor, index, refs, TEXTS, mode, k=5, exclude=exclude)
        scores = brute_force_token_similarity(ranking.queries, index.features)
        for row, ranked in enumerate(ranking.ids):
            assert exclude[row] not in ranked and len(ranked) == 5
            order = [ids[j] for j in torch.argsort(scores[row], descending=True, stable=True).tolist()]
            assert ranked == [i for i in order if i != exclude[row]][:5], mode


def test_errors_name_the_problem(tiny_model, tiny_processor, gallery):
    with pytest.raises(ValueError, match="unknown query mode"):
        encode_queries(tiny_model, tiny_processor, gallery[:1], TEXTS[:1], "pixels")
    with pytest.raises(ValueError, match="needs the reference images"):
        encode_queries(tiny_model, tiny_processor, None, TEXTS[:1], "composed")
    with pytest.raises(ValueError, match="needs the modification texts"):
        encode_queries(tiny_model, tiny_processor, gallery[:1], None, "image_text_fusion")
    with pytest.raises(ValueError, match="2 reference images for 1 queries"):
        encode_queries(tiny_model, tiny_processor, gallery[:2], TEXTS[:1], "composed")
    with pytest.raises(ValueError, match="same"):
        encode_queries(tiny_model, tiny_processor, gallery[:2], [["a"], ["b", "c"]], "composed")
