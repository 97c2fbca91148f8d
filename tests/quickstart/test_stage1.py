"""Stage-1 alignment (the quickstart's stand-in for pretrained BLIP-2): ITC, ITM with in-batch hard negatives, ITG."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mra_cir.quickstart.stage1 import AlignmentArguments, align_image_text, itm_logits, itm_loss


def _fresh_model():
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import tiny_config

    torch.manual_seed(0)
    return MraCirModel(tiny_config())


def _batch(tiny_processor, n: int):
    from mra_cir.tiny import random_image

    texts = ["a red circle", "a blue square", "a green triangle", "a white cross"][:n]
    return tiny_processor(images=[random_image(i) for i in range(n)], text=texts)


def test_itm_logits_match_blip2_fused_path(tiny_processor):
    """The fused path is BLIP-2's ITM: a (B, 2) logit from `itm_head`, and its gradient reaches the query tokens."""
    model = _fresh_model()
    batch = _batch(tiny_processor, 3)
    vision = model.get_vision_outputs(batch["pixel_values"])
    logits = itm_logits(model, vision, batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (3, 2)
    logits.sum().backward()
    assert model.query_tokens.grad is not None and model.query_tokens.grad.abs().sum() > 0
    assert model.itm_head.weight.grad.abs().sum() > 0


def test_itm_loss_negatives_respect_groups(tiny_processor):
    """Two pairs in different groups: each one's only possible negative is the other, so the loss is determined."""
    model = _fresh_model().eval()
    batch = _batch(tiny_processor, 2)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    vision = model.get_vision_outputs(batch["pixel_values"])
    with torch.no_grad():
        loss = itm_loss(model, vision, ids, mask, torch.randn(2, 2), groups=torch.tensor([0, 1]))
        swap = torch.tensor([1, 0])
        expected = F.cross_entropy(
            torch.cat(
                [
                    itm_logits(model, vision, ids, mask),  # positives
                    itm_logits(model, vision[swap], ids, mask),  # text i with the other image
                    itm_logits(model, vision, ids[swap], mask[swap]),  # image i with the other text
                ]
            ),
            torch.tensor([1, 1, 0, 0, 0, 0]),
        )
        torch.testing.assert_close(loss, expected)
        # one group: no valid negative anywhere, only the positives are classified
        same = itm_loss(model, vision, ids, mask, torch.randn(2, 2), groups=torch.tensor([5, 5]))
        torch.testing.assert_close(same, F.cross_entropy(itm_logits(model, vision, ids, mask), torch.tensor([1, 1])))


def test_align_image_text_trains_itm_head_only_with_itm(tiny_processor):
    from mra_cir.tiny import random_image

    images = [random_image(i) for i in range(8)]
    captions = [f"a {c} circle" for c in ("red", "green", "blue", "yellow", "white", "black", "red", "green")]
    results = {}
    for weight in (0.0, 1.0):
        model = _fresh_model()
        before = model.itm_head.weight.detach().clone()
        summary = align_image_text(
            model,
            tiny_processor,
            images,
            captions,
            AlignmentArguments(max_steps=3, batch_size=8, itm_weight=weight, warmup_steps=1),
            show_progress=False,
            groups=[0, 1, 2, 3, 4, 5, 0, 1],
        )
        results[weight] = (summary, not torch.equal(before, model.itm_head.weight))
    assert results[0.0][0]["final_itm_loss"] is None and not results[0.0][1]
    assert results[1.0][0]["final_itm_loss"] > 0 and results[1.0][1]
    with pytest.raises(ValueError, match="groups"):
        align_image_text(_fresh_model(), tiny_processor, images, captions, groups=[0, 1], show_progress=False)
    with pytest.raises(ValueError, match="itm_weight"):
        AlignmentArguments(itm_weight=-1.0)


def test_itm_negative_modes(tiny_processor):
    """hard: the ITC logits as given; random: uniform (zeros); mixed: a seeded half of the rows uniform."""
    from mra_cir.quickstart.stage1 import _negative_logits

    logits = torch.randn(64, 64)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(_negative_logits(logits, AlignmentArguments(itm_negatives="hard"), gen), logits)
    assert torch.equal(_negative_logits(logits, AlignmentArguments(itm_negatives="random"), gen), torch.zeros(64, 64))
    mixed = _negative_logits(logits, AlignmentArguments(itm_negatives="mixed"), gen)
    uniform_rows = (mixed == 0).all(dim=1)
    assert 16 < int(uniform_rows.sum()) < 48
    assert torch.equal(mixed[~uniform_rows], logits[~uniform_rows])
    with pytest.raises(ValueError, match="itm_negatives"):
        AlignmentArguments(itm_negatives="easy")


def test_block_permutation_keeps_blocks_together():
    from mra_cir.quickstart.stage1 import block_permutation

    gen = torch.Generator().manual_seed(0)
    order = block_permutation(11, 2, gen).tolist()
    assert sorted(order) == list(range(11)) and order[-1] == 10  # the incomplete block goes last
    assert order[:10] != list(range(10))  # shuffled
    for position in range(0, 10, 2):  # pairs (2k, 2k+1) adjacent and aligned: a batch of 64 never splits one
        assert order[position] % 2 == 0 and order[position + 1] == order[position] + 1
    assert (
        block_permutation(5, 1, torch.Generator().manual_seed(0)).tolist()
        == torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
    )
    with pytest.raises(ValueError, match="batch_blocks"):
        AlignmentArguments(batch_blocks=0)


def _itg_hidden(model, vision, ids, mask):
    return model.get_fused_hidden_states(vision, ids, mask, causal_text=True)


def test_itg_mask_is_causal_over_text_and_hides_text_from_queries(tiny_processor):
    """Changing caption token k changes nothing before it (queries included); the image reaches the text."""
    model = _fresh_model().eval()
    batch = _batch(tiny_processor, 2)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    vision = model.get_vision_outputs(batch["pixel_values"])
    q, k = model.config.num_query_tokens, 2
    changed = ids.clone()
    changed[0, k] = (ids[0, k] + 1) % model.config.qformer_config.vocab_size
    with torch.no_grad():
        base, edited = _itg_hidden(model, vision, ids, mask), _itg_hidden(model, vision, changed, mask)
        other_image = _itg_hidden(model, vision.flip(0), ids, mask)
    torch.testing.assert_close(base[0, : q + k], edited[0, : q + k])  # queries and the text before token k
    assert not torch.allclose(base[0, q + k :], edited[0, q + k :])
    assert not torch.allclose(base[0, q], other_image[0, q])  # the first text position ([CLS]) reads the image


def test_itg_loss_is_next_token_cross_entropy_without_padding(tiny_processor):
    """The loss equals next-token cross-entropy over the tied word embeddings, padding excluded."""
    from mra_cir.quickstart.stage1 import itg_loss

    model = _fresh_model().eval()
    from mra_cir.tiny import random_image

    batch = tiny_processor(images=[random_image(0), random_image(1)], text=["a red circle on the left", "a cross"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert int(mask.sum()) < mask.numel()  # the second caption is padded
    vision = model.get_vision_outputs(batch["pixel_values"])
    q = model.config.num_query_tokens
    with torch.no_grad():
        loss = itg_loss(model, vision, ids, mask)
        hidden = _itg_hidden(model, vision, ids, mask)[:, q:-1]
        logits = hidden @ model.embeddings.word_embeddings.weight.t()
        terms = [
            F.cross_entropy(logits[i, : int(mask[i].sum()) - 1], ids[i, 1 : int(mask[i].sum())], reduction="sum")
            for i in range(2)
        ]
    torch.testing.assert_close(loss, sum(terms) / (int(mask.sum()) - 2))


def test_align_image_text_with_itg_lowers_generation_loss(tiny_processor):
    from mra_cir.quickstart.stage1 import itg_loss
    from mra_cir.tiny import random_image

    images = [random_image(i) for i in range(8)]
    captions = [f"a {c} circle" for c in ("red", "green", "blue", "yellow", "white", "black", "red", "green")]
    model = _fresh_model()
    batch = tiny_processor(images=images, text=captions)

    def generation() -> float:
        with torch.no_grad():
            return float(
                itg_loss(
                    model,
                    model.get_vision_outputs(batch["pixel_values"]),
                    batch["input_ids"],
                    batch["attention_mask"],
                )
            )

    before = generation()
    summary = align_image_text(
        model,
        tiny_processor,
        images,
        captions,
        AlignmentArguments(max_steps=60, batch_size=8, itm_weight=0.0, itg_weight=1.0, warmup_steps=1),
        show_progress=False,
    )
    assert summary["final_itg_loss"] is not None and generation() < 0.75 * before
    with pytest.raises(ValueError, match="itg_weight"):
        AlignmentArguments(itg_weight=-0.5)
