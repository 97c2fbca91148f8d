"""`mra-cir convert-lavis`: a state dict in LAVIS BLIP-2 key layout, made from a tiny model, converts back to equal
outputs; LAVIS' own names (read from salesforce/LAVIS `blip2_qformer.py`, `Qformer.py`, `eva_vit.py`) are the ones
written; unmatched keys, missing weights and pickled objects stop the conversion with the keys named."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from mra_cir.commands import convert_lavis
from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.modeling_mra_cir.lavis_conversion import (
    LavisConversionError,
    infer_config,
    lavis_to_mra_cir,
    load_lavis_state_dict,
    mra_cir_to_lavis,
)
from mra_cir.tiny import offline_processor, tiny_config

# vision width 24 (3 layers), Q-Former width 32 (4 layers, cross-attention every 2nd), 28 px / patch 7, 6 queries, D 16
SHAPE = dict(
    hidden_size=32,
    vision_hidden_size=24,
    num_hidden_layers=4,
    image_size=28,
    patch_size=7,
    num_query_tokens=6,
    embed_dim=16,
    vocab_size=64,
)


def _tiny(seed: int = 0) -> MraCirModel:
    """A tiny MraCirModel with non-trivial norms, query tokens and biases (the key part of each ViT qkv bias is zero,
    as in BLIP-2: LAVIS stores only q_bias and v_bias)."""
    config = tiny_config(**SHAPE)
    config.vision_config.num_hidden_layers = 3
    config.vision_config.num_attention_heads = 4
    config.qformer_config.cross_attention_frequency = 2
    torch.manual_seed(seed)
    model = MraCirModel(type(config)(**config.to_dict())).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name.lower() or "layer_norm" in name or name == "query_tokens":
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
            if name.endswith("self_attn.qkv.bias"):
                param[24:48] = 0.0
        model.logit_temperature.fill_(0.031)
    return model


def _features(model: MraCirModel, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(3, 3, 28, 28, generator=gen)
    input_ids = torch.randint(5, 64, (3, 7), generator=gen)
    mask = torch.ones_like(input_ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        return {
            "image": model.get_image_features(pixel_values),
            "text": model.get_text_features(input_ids, mask),
            "composed": model.get_composed_features(pixel_values, input_ids, mask),
        }


def _lavis_checkpoint(model: MraCirModel, path, drop=(), extra=None, wrap="model", prefix=""):
    """The model's weights as LAVIS saves them: its key layout, the captioning LM head and position_ids included."""
    sd = mra_cir_to_lavis(model.state_dict())
    sd["Qformer.cls.predictions.bias"] = torch.zeros(64)
    sd["Qformer.cls.predictions.transform.dense.weight"] = torch.randn(32, 32)
    sd["Qformer.bert.embeddings.position_ids"] = torch.arange(128)[None]
    sd = {f"{prefix}{k}": v for k, v in sd.items() if not any(k.startswith(d) for d in drop)}
    sd.update(extra or {})
    torch.save({wrap: sd, "config": {"model": {"arch": "blip2"}}, "epoch": 3} if wrap else sd, path)
    return path


def test_lavis_key_names_are_lavis_own(tmp_path):
    model = _tiny()
    lavis = mra_cir_to_lavis(model.state_dict())
    # names as LAVIS' modules define them (Blip2Qformer, BertLayer with cross-attention every cross_attention_freq-th
    # layer, EVA ViT blocks with q_bias / v_bias), not derived from the conversion rules
    for key in (
        "visual_encoder.cls_token",
        "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight",
        "visual_encoder.blocks.2.norm1.weight",
        "visual_encoder.blocks.0.attn.qkv.weight",
        "visual_encoder.blocks.0.attn.q_bias",
        "visual_encoder.blocks.0.attn.v_bias",
        "visual_encoder.blocks.0.attn.proj.bias",
        "visual_encoder.blocks.1.mlp.fc2.weight",
        "ln_vision.weight",
        "Qformer.bert.embeddings.word_embeddings.weight",
        "Qformer.bert.embeddings.LayerNorm.bias",
        "Qformer.bert.encoder.layer.0.attention.self.query.weight",
        "Qformer.bert.encoder.layer.2.crossattention.self.key.weight",
        "Qformer.bert.encoder.layer.2.crossattention.output.LayerNorm.weight",
        "Qformer.bert.encoder.layer.3.intermediate_query.dense.weight",
        "Qformer.bert.encoder.layer.3.output_query.LayerNorm.bias",
        "Qformer.bert.encoder.layer.1.output.dense.weight",
        "query_tokens",
        "vision_proj.weight",
        "text_proj.bias",
        "itm_head.weight",
        "temp",
    ):
        assert key in lavis, key
    assert not any(k.startswith("Qformer.bert.encoder.layer.1.crossattention") for k in lavis)
    assert "visual_encoder.blocks.0.attn.qkv.bias" not in lavis  # LAVIS has separate q / v biases, no k bias
    assert lavis["Qformer.bert.encoder.layer.2.crossattention.self.key.weight"].shape == (32, 24)  # Q-Former <- ViT
    assert torch.equal(lavis["ln_vision.weight"], model.vision_model.post_layernorm.weight)
    assert torch.equal(lavis["Qformer.bert.embeddings.LayerNorm.weight"], model.qformer.layernorm.weight)
    assert float(lavis["temp"]) == pytest.approx(0.031)
    qkv_bias = model.vision_model.encoder.layers[0].self_attn.qkv.bias
    assert torch.equal(lavis["visual_encoder.blocks.0.attn.v_bias"], qkv_bias[48:])
    # an MraCirModel whose ViT has a key bias has no LAVIS form
    sd = model.state_dict()
    sd["vision_model.encoder.layers.0.self_attn.qkv.bias"][30] = 1.0
    with pytest.raises(LavisConversionError, match="key part of the bias"):
        mra_cir_to_lavis(sd)


def test_round_trip_through_the_command_gives_equal_outputs(tmp_path, capsys):
    model = _tiny()
    offline_processor(28).save_pretrained(tmp_path / "processor")
    ckpt = _lavis_checkpoint(model, tmp_path / "blip2_cir.pth")
    argv = [str(ckpt), str(tmp_path / "out"), "--vision_num_heads", "4", "--qformer_num_heads", "4"]
    assert convert_lavis.main([*argv, "--processor", str(tmp_path / "processor")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["dropped"] == [
        "Qformer.bert.embeddings.position_ids",
        "Qformer.cls.predictions.bias",
        "Qformer.cls.predictions.transform.dense.weight",
    ]
    assert report["defaulted"] == [] and report["processor"] == str(tmp_path / "processor")
    converted = MraCirModel.from_pretrained(tmp_path / "out").eval()
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "conversion.json").is_file()
    # the shapes were read from the tensors: widths, depths, image size, queries, cross-attention frequency
    vc, qc = converted.config.vision_config, converted.config.qformer_config
    assert (vc.hidden_size, vc.num_hidden_layers, vc.image_size, vc.patch_size) == (24, 3, 28, 7)
    assert (qc.hidden_size, qc.num_hidden_layers, qc.cross_attention_frequency, qc.vocab_size) == (32, 4, 2, 64)
    assert converted.config.num_query_tokens == 6 and converted.config.image_text_hidden_size == 16
    for key, value in _features(model).items():
        torch.testing.assert_close(_features(converted)[key], value, rtol=0, atol=1e-6, msg=key)
    assert float(converted.logit_temperature.detach()) == pytest.approx(0.031)
    other = _features(_tiny(seed=5))  # the equality above is not trivially met: other weights give other features
    assert all(float((other[k] - _features(converted)[k]).abs().max()) > 1e-3 for k in other)


def test_blip2_retrieval_weights_through_lavis_layout_match_transformers(tmp_path):
    """transformers' own Blip2ForImageTextRetrieval as the reference: its weights in LAVIS layout, converted, give its
    image and text embeddings."""
    config = _tiny().config
    blip2 = Blip2Config(
        vision_config=config.vision_config.to_dict(),
        qformer_config=config.qformer_config.to_dict(),
        num_query_tokens=6,
        image_text_hidden_size=16,
    )
    torch.manual_seed(3)
    reference = Blip2ForImageTextRetrieval(blip2).eval()
    with torch.no_grad():
        reference.query_tokens.normal_(std=0.5)
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("language")}
    sd["logit_temperature"] = torch.tensor(0.07)
    converted, report = lavis_to_mra_cir(mra_cir_to_lavis(sd))
    assert report == {"dropped": [], "unmatched": []}
    model = MraCirModel(infer_config(converted, 4, 4)).eval()
    model.load_state_dict(converted)
    gen = torch.Generator().manual_seed(0)
    pixel_values, ids = torch.randn(2, 3, 28, 28, generator=gen), torch.randint(5, 64, (2, 5), generator=gen)
    with torch.no_grad():
        out = reference(pixel_values=pixel_values, input_ids=ids, attention_mask=torch.ones_like(ids))
        torch.testing.assert_close(model.get_image_features(pixel_values), out.image_embeds, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.get_text_features(ids), out.text_embeds, rtol=1e-5, atol=1e-5)


def test_unmatched_keys_are_named_and_can_be_ignored(tmp_path, capsys):
    model = _tiny()
    ckpt = _lavis_checkpoint(model, tmp_path / "sprc.pt", extra={"prompt_tokens": torch.zeros(1, 6, 32)}, wrap="")
    heads = ["--vision_num_heads", "4", "--qformer_num_heads", "4"]
    assert convert_lavis.main([str(ckpt), str(tmp_path / "a"), *heads]) == 2
    err = capsys.readouterr().err
    assert "prompt_tokens" in err and "--ignore-keys" in err and "1 key(s)" in err
    assert not (tmp_path / "a" / "model.safetensors").exists()
    assert convert_lavis.main([str(ckpt), str(tmp_path / "b"), *heads, "--ignore_keys", "prompt_tokens"]) == 0
    assert "no processor saved" in capsys.readouterr().err
    assert "prompt_tokens" in json.loads((tmp_path / "b" / "conversion.json").read_text())["dropped"]


def test_covr2_style_checkpoint_without_itm_head_and_temperature(tmp_path):
    model = _tiny()
    ckpt = _lavis_checkpoint(
        model, tmp_path / "covr.ckpt", drop=("itm_head", "temp"), wrap="state_dict", prefix="model."
    )
    state = load_lavis_state_dict(ckpt)
    assert "visual_encoder.cls_token" in state and not any(k.startswith("model.") for k in state)
    from mra_cir.modeling_mra_cir.lavis_conversion import convert_lavis_checkpoint

    report = convert_lavis_checkpoint(ckpt, tmp_path / "out", vision_num_heads=4, qformer_num_heads=4)
    assert report["defaulted"] == ["itm_head.bias", "itm_head.weight", "logit_temperature"]
    converted = MraCirModel.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_features(converted)["composed"], _features(model)["composed"], rtol=0, atol=1e-6)
    assert float(converted.logit_temperature.detach()) == pytest.approx(converted.config.logit_temperature_init)


def test_missing_vit_needs_a_base_model(tmp_path, capsys):
    model, base = _tiny(seed=0), _tiny(seed=5)
    base.save_pretrained(tmp_path / "base")
    offline_processor(28).save_pretrained(tmp_path / "base")
    ckpt = _lavis_checkpoint(model, tmp_path / "no_vit.pth", drop=("visual_encoder", "ln_vision"))
    assert convert_lavis.main([str(ckpt), str(tmp_path / "a"), "--vision_num_heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "--base-model" in err and "cls_token" not in err and "vision_model.embeddings.class_embedding" in err
    assert convert_lavis.main([str(ckpt), str(tmp_path / "b"), "--base_model", str(tmp_path / "base")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["processor"] == str(tmp_path / "base") and (tmp_path / "b" / "processor_config.json").is_file()
    converted = MraCirModel.from_pretrained(tmp_path / "b")
    # the ViT is the base model's, the rest the checkpoint's
    assert torch.equal(converted.vision_model.embeddings.class_embedding, base.vision_model.embeddings.class_embedding)
    assert torch.equal(converted.query_tokens, model.query_tokens)
    assert torch.equal(converted.qformer.encoder.layer[2].crossattention.attention.key.weight,
                       model.qformer.encoder.layer[2].crossattention.attention.key.weight)  # fmt: skip


def test_pickled_objects_are_refused_with_weights_only(tmp_path):
    sd = mra_cir_to_lavis(_tiny().state_dict())
    path = tmp_path / "unsafe.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(LavisConversionError, match="weights_only=True"):
        load_lavis_state_dict(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lavis_state_dict(tmp_path / "absent.pth")
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "empty.pth")
    with pytest.raises(LavisConversionError, match="no state dict found"):
        load_lavis_state_dict(tmp_path / "empty.pth")
