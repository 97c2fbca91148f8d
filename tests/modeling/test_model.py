"""MraCirModel: shapes, equivalence with transformers' Blip2ForImageTextRetrieval, save/load, loss, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TESTS_DIR
from transformers import AutoModel, AutoProcessor, BertConfig, BertModel, Blip2Config, Blip2ForImageTextRetrieval

from mra_cir.modeling_mra_cir import MraCirConfig, MraCirModel, MraCirProcessor, max_sim_infonce_loss, max_sim_logits
from mra_cir.tiny import random_image, tiny_config

# (vision width, vision layers, image size, patch, qformer width, qformer layers, heads, queries, D, cross freq)
BLIP2_SHAPES = [
    (32, 2, 32, 8, 32, 2, 4, 4, 16, 1),
    (48, 1, 28, 7, 40, 3, 4, 6, 24, 2),
    (24, 3, 30, 10, 64, 2, 8, 8, 8, 2),
]


def blip2_config(vw, vl, size, patch, qw, ql, heads, nq, dim, freq, **extra) -> Blip2Config:
    return Blip2Config(
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=vw * 2,
            num_hidden_layers=vl,
            num_attention_heads=4 if vw % 4 == 0 else 2,
            image_size=size,
            patch_size=patch,
            initializer_range=0.02,
        ),
        qformer_config=dict(
            hidden_size=qw,
            intermediate_size=qw * 3,
            num_hidden_layers=ql,
            num_attention_heads=heads,
            vocab_size=99,
            cross_attention_frequency=freq,
            use_qformer_text_input=True,
        ),
        text_config=dict(
            model_type="opt",
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=16,
            vocab_size=99,
            word_embed_proj_dim=16,
        ),
        num_query_tokens=nq,
        image_text_hidden_size=dim,
        **extra,
    )


def random_blip2_retrieval(config: Blip2Config, seed: int) -> Blip2ForImageTextRetrieval:
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    with torch.no_grad():  # transformers zero-initialises the query tokens: make them (and every norm) non-trivial
        model.query_tokens.normal_(std=0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model


def reference_composed(ref: Blip2ForImageTextRetrieval, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    """The composed query written with transformers' own modules (the ITM path's fused sequence at position Q)."""
    image_embeds = ref.vision_model(pixel_values=pixel_values).last_hidden_state
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    query_tokens = ref.query_tokens.expand(image_embeds.shape[0], -1, -1)
    q = query_tokens.shape[1]
    mask = torch.cat([torch.ones(query_tokens.shape[:-1], dtype=torch.long), attention_mask], dim=1)
    embeds = ref.embeddings(input_ids=input_ids, query_embeds=query_tokens)
    out = ref.qformer(
        query_embeds=embeds,
        query_length=q,
        attention_mask=mask,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
    )
    return torch.nn.functional.normalize(ref.text_projection(out.last_hidden_state[:, q, :]), dim=-1)


def test_shapes(tiny_model, tiny_processor):
    images = [random_image(i) for i in range(3)]
    inputs = tiny_processor(images=images, text=["make it red", "add a circle", "blue"], target_images=images)
    with torch.no_grad():
        out = tiny_model(**inputs)
        cfg = tiny_model.config
        assert out.query_embeds.shape == (3, cfg.image_text_hidden_size)
        assert out.target_embeds.shape == (3, cfg.num_query_tokens, cfg.image_text_hidden_size)
        assert out.logits_per_query.shape == (3, 3)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        torch.testing.assert_close(out.query_embeds.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(out.target_embeds.norm(dim=-1), torch.ones(3, cfg.num_query_tokens))
        text = tiny_model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        assert text.shape == (3, cfg.image_text_hidden_size)
        # the logits are the max-sim cosine over the target's tokens divided by tau
        expected = torch.einsum("bd,tqd->btq", out.query_embeds, out.target_embeds).amax(-1)
        torch.testing.assert_close(out.logits_per_query, expected / tiny_model.clamped_logit_temperature())


@pytest.mark.parametrize("shape", BLIP2_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_equivalence_with_blip2_retrieval(shape, tmp_path):
    config = blip2_config(*shape)
    ref = random_blip2_retrieval(config, seed=sum(shape))
    ref.save_pretrained(tmp_path / "blip2")
    model = MraCirModel.from_pretrained(tmp_path / "blip2").eval()
    size = config.vision_config.image_size
    torch.manual_seed(1)
    pixel_values = torch.randn(3, 3, size, size)
    input_ids = torch.randint(5, 99, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    with torch.no_grad():
        itc = ref(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        torch.testing.assert_close(model.get_image_features(pixel_values), itc.image_embeds, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            model.get_text_features(input_ids, attention_mask), itc.text_embeds, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            model.get_composed_features(pixel_values, input_ids, attention_mask),
            reference_composed(ref, pixel_values, input_ids, attention_mask),
            atol=1e-5,
            rtol=1e-5,
        )
        # features differ between images: the comparison above is not trivially satisfied
        feats = model.get_image_features(pixel_values)
        assert (feats[0] - feats[1]).abs().max() > 1e-3


def test_saved_model_loads_back_into_blip2_retrieval(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    config = tiny_model.config
    blip2 = Blip2Config(
        vision_config=config.vision_config.to_dict(),
        qformer_config=config.qformer_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=config.image_text_hidden_size,
    )
    ref = Blip2ForImageTextRetrieval(blip2).eval()
    from safetensors.torch import load_file

    state = load_file(tmp_path / "m" / "model.safetensors")
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == ["logit_temperature"]


def test_save_load_round_trip(tiny_model, tiny_processor, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_processor.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"configuration_mra_cir.py", "modeling_mra_cir.py", "README.md"} <= set(files)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "mra_cir"
    assert config["auto_map"]["AutoModel"].endswith("modeling_mra_cir.MraCirModel")
    loaded = AutoModel.from_pretrained(tmp_path / "m").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, MraCirModel) and isinstance(processor, MraCirProcessor)
    inputs = processor(images=[random_image(5)], text=["make it red"], target_images=[random_image(6)])
    with torch.no_grad():
        a, b = tiny_model(**inputs), loaded(**inputs)
    torch.testing.assert_close(a.query_embeds, b.query_embeds)
    torch.testing.assert_close(a.target_embeds, b.target_embeds)
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert f"{tiny_model.config.num_query_tokens} query tokens" in card


def test_model_card_names_training(tiny_model, tmp_path):
    tiny_model.training_summary = {
        "base_model": "Salesforce/blip2-itm-vit-g",
        "datasets": ["me/triplets"],
        "hyperparameters": {"learning_rate": 1e-5},
    }
    try:
        tiny_model.save_pretrained(tmp_path / "m")
    finally:
        del tiny_model.training_summary
    card = (tmp_path / "m" / "README.md").read_text()
    assert "base_model: Salesforce/blip2-itm-vit-g" in card and "- me/triplets" in card
    assert '"learning_rate": 1e-05' in card


def test_trust_remote_code_in_fresh_process(tiny_model, tiny_processor, tmp_path):
    save = tmp_path / "remote"
    tiny_model.save_pretrained(save)
    tiny_processor.save_pretrained(save)
    images = [random_image(1)]
    inputs = tiny_processor(images=images, text=["make it blue"])
    with torch.no_grad():
        expected = tiny_model.get_composed_features(
            inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
        )
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("mra_cir", "modeling_mra_cir", "dataset_builders", "trainers"):
                    raise ImportError("the mra-cir package must not be imported: " + name)
        sys.meta_path.insert(0, Block())
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(save)!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            out = model.get_composed_features(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        torch.save(out, {str(tmp_path / "out.pt")!r})
        print(type(model).__module__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith("transformers_modules")
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)


def test_loss_against_hand_computed_value():
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    targets = torch.nn.functional.normalize(
        torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [-1.0, 0.0]], [[0.0, -1.0], [-0.6, 0.8]]]), dim=-1
    )
    tau = 0.5
    loss, logits = max_sim_infonce_loss(query, targets, tau)
    # by hand: cosines of q0 with target tokens -> max; same for q1
    sims = [[max(1.0, 0.0), max(0.8, -1.0), max(0.0, -0.6)], [max(0.6, 0.8), max(0.96, -0.6), max(-0.8, 0.28)]]
    expected = 0.0
    for i, row in enumerate(sims):
        z = [s / tau for s in row]
        expected += -(z[i] - math.log(sum(math.exp(v) for v in z)))
    expected /= 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(logits, torch.tensor(sims) / tau)
    # mean reduction: cosine with the mean token
    mean_logits = max_sim_logits(query, targets, reduce="mean")
    torch.testing.assert_close(mean_logits, query @ targets.mean(1).T)


def test_temperature_is_clamped_and_learnable(tiny_model):
    model = MraCirModel(tiny_config(logit_temperature_init=0.05, logit_temperature_min=0.01))
    assert model.logit_temperature.requires_grad
    with torch.no_grad():
        model.logit_temperature.fill_(1e-6)
    assert model.clamped_logit_temperature().item() == pytest.approx(0.01)


def test_gathered_loss_two_processes_equals_single_process(tmp_path):
    worker = str(TESTS_DIR / "dist_workers" / "gather_loss_worker.py")
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2
    assert res["mean_gathered_loss"] == pytest.approx(res["single_process_loss"], abs=1e-5)
    # without gathering the losses differ (fewer negatives): the comparison above is meaningful
    assert abs(res["mean_local_loss"] - res["single_process_loss"]) > 1e-4
    assert res["max_grad_diff"] < 1e-5
    assert res["logits_shape"] == [2, 4]
    # unequal local batch sizes (3 and 1) are padded for the collective and trimmed
    assert res["uneven_logits_shape"] == [3, 4]
    assert res["uneven_weighted_loss"] == pytest.approx(res["single_process_loss"], abs=1e-5)


# ---------------------------------------------------------------------------------------------------------- errors
def test_error_batch_mismatch(tiny_model, tiny_processor):
    inputs = tiny_processor(images=[random_image(0), random_image(1)], text=["a"], target_images=[random_image(2)] * 2)
    with pytest.raises(ValueError, match="batch sizes do not match.*reference_pixel_values"):
        tiny_model(**inputs)


def test_error_too_few_targets(tiny_model, tiny_processor):
    inputs = tiny_processor(images=[random_image(0)] * 2, text=["a", "b"], target_images=[random_image(2)])
    with pytest.raises(ValueError, match="target_pixel_values has batch size 1"):
        tiny_model(**inputs)


def test_error_wrong_pixel_size(tiny_model):
    with pytest.raises(ValueError, match=r"pixel_values has spatial size \(48, 48\).*expects \(32, 32\)"):
        tiny_model.get_image_features(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"target_pixel_values must be a \(batch, 3, 32, 32\) tensor"):
        tiny_model(
            reference_pixel_values=torch.randn(1, 3, 32, 32),
            input_ids=torch.ones(1, 3, dtype=torch.long),
            target_pixel_values=torch.randn(1, 32, 32),
        )


def test_error_checkpoint_of_another_architecture(tmp_path):
    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type='bert'.*MraCirModel loads only"):
        MraCirModel.from_pretrained(tmp_path / "bert")


def test_error_invalid_config():
    with pytest.raises(ValueError, match="similarity_reduce"):
        MraCirConfig(similarity_reduce="sum")


def test_equivalence_with_image_token_index(tmp_path):
    """A BLIP-2 config with `image_token_index` (Blip2Processor prepends Q image tokens): same features."""
    config = blip2_config(*BLIP2_SHAPES[0], image_token_index=98)
    ref = random_blip2_retrieval(config, seed=7)
    ref.save_pretrained(tmp_path / "blip2")
    model = MraCirModel.from_pretrained(tmp_path / "blip2").eval()
    q = config.num_query_tokens
    torch.manual_seed(2)
    pixel_values = torch.randn(2, 3, 32, 32)
    text_ids = torch.randint(5, 90, (2, 6))
    input_ids = torch.cat([torch.full((2, q), 98), text_ids], dim=1)
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        itc = ref(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        torch.testing.assert_close(
            model.get_text_features(input_ids, attention_mask), itc.text_embeds, atol=1e-5, rtol=1e-5
        )
        # the composed query is the same with or without the image placeholders
        torch.testing.assert_close(
            model.get_composed_features(pixel_values, input_ids, attention_mask),
            model.get_composed_features(pixel_values, text_ids, torch.ones_like(text_ids)),
        )
