"""Tiny random-weight models of the real classes, built offline from seeded configs (diffusers' get_dummy_components).

Every builder seeds torch before each component, so two builds are identical. Nothing is downloaded:
CLIP tokenizers are written from a byte-level vocabulary into a temporary folder, open_clip uses its bundled BPE.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

DIM = 32  # embedding width shared by the tiny open_clip and every tiny decoder


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte maps to a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(folder: Path):
    """A CLIPTokenizer over single bytes (no merges), from vocab.json/merges.txt written to `folder`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(c, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def gpt2_tokenizer(folder: Path):
    """A byte-level GPT2Tokenizer (no merges) from files written to `folder`."""
    from transformers import GPT2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))


def tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 and its tokenizer saved with save_pretrained: stands in for hub weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_tokenizer(folder / "_vocab")
    torch.manual_seed(seed)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    lm.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


OPEN_CLIP_CONFIG = {
    "embed_dim": DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
              "interpolation": "bicubic", "resize_mode": "shortest"}


def tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    """An open_clip `local-dir:` bundle of width DIM with open_clip's own (bundled, offline) BPE tokenizer."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = CLIP(**OPEN_CLIP_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CONFIG,
                                                              "preprocess_cfg": PREPROCESS}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def unclip_components(tmp: Path, normalizer: str = "random") -> dict:
    """StableUnCLIPImg2ImgPipeline components at toy size (after diffusers' own fast tests); 64 px images.

    normalizer "random": seeded non-trivial embedding statistics (as unclip-l); "identity": mean 0, std 1 (as unclip-h).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=DIM, projection_dim=DIM, num_hidden_layers=1, num_attention_heads=4, image_size=32,
        intermediate_size=37, patch_size=8)).eval()
    torch.manual_seed(0)
    image_normalizer = StableUnCLIPImageNormalizer(embedding_dim=DIM)
    if normalizer == "random":
        with torch.no_grad():
            image_normalizer.mean.copy_(0.1 * torch.randn(1, DIM))
            image_normalizer.std.copy_(0.2 + torch.rand(1, DIM))
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=DIM, projection_dim=DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=1000)).eval()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), attention_head_dim=(2, 4),
        class_embed_type="projection", projection_class_embeddings_input_dim=DIM * 2, cross_attention_dim=DIM,
        layers_per_block=1, upcast_attention=True, use_linear_projection=True)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        sample_size=64)
    return {
        "feature_extractor": CLIPImageProcessor(crop_size=32, size=32),
        "image_encoder": image_encoder,
        "image_normalizer": image_normalizer.eval(),
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "tokenizer": clip_tokenizer(tmp / "clip-vocab"),
        "text_encoder": text_encoder,
        "unet": unet.eval(),
        "scheduler": DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        "vae": vae.eval(),
    }


def unclip_pipeline(tmp: Path, normalizer: str = "random"):
    from diffusers import StableUnCLIPImg2ImgPipeline

    return StableUnCLIPImg2ImgPipeline(**unclip_components(tmp, normalizer))


def kandinsky_pipeline():
    """KandinskyV22Pipeline at toy size (diffusers' own dummy UNet and MoVQ); 64 px images."""
    from diffusers import DDIMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=DIM, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None)
    torch.manual_seed(0)
    movq = VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
                   vq_embed_dim=4)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                              thresholding=False)
    return KandinskyV22Pipeline(unet=unet.eval(), scheduler=scheduler, movq=movq.eval())


def kandinsky_prior_pipeline(tmp: Path):
    """KandinskyV22PriorPipeline at toy size, with seeded non-trivial clip_mean / clip_std."""
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=DIM, num_layers=1)
    with torch.no_grad():
        prior.clip_mean.copy_(0.1 * torch.randn(1, DIM))
        prior.clip_std.copy_(0.5 + torch.rand(1, DIM))
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=DIM, image_size=32, projection_dim=DIM, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=1, patch_size=8))
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=DIM, projection_dim=DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=1000))
    return KandinskyV22PriorPipeline(
        prior=prior.eval(), image_encoder=image_encoder.eval(), text_encoder=text_encoder.eval(),
        tokenizer=clip_tokenizer(tmp / "prior-vocab"),
        scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                  clip_sample=True, clip_sample_range=10.0),
        image_processor=CLIPImageProcessor(crop_size=32, size=32, do_center_crop=True, do_normalize=True,
                                           do_resize=True, resample=3))


def karlo_components(tmp: Path) -> dict:
    """The prior half of `StableUnCLIPPipeline` at toy size (after diffusers' own fast test): a Karlo-style
    PriorTransformer with seeded non-trivial clip statistics, a CLIP text encoder with projection, DDPM."""
    from diffusers import DDPMScheduler, PriorTransformer, UnCLIPScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=DIM, num_layers=1)
    with torch.no_grad():
        prior.clip_mean.copy_(0.1 * torch.randn(1, DIM))
        prior.clip_std.copy_(0.5 + torch.rand(1, DIM))
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=DIM, projection_dim=DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=1000))
    unclip = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                             clip_sample=True, clip_sample_range=5.0, beta_schedule="squaredcos_cap_v2")
    return {"prior_tokenizer": clip_tokenizer(tmp / "karlo-vocab"), "prior_text_encoder": text_encoder.eval(),
            "prior": prior.eval(), "prior_scheduler": DDPMScheduler.from_config(unclip.config), "_unclip": unclip}


def save_karlo(folder: Path, parts: dict) -> tuple[Path, Path]:
    """Karlo as the hub lays it out: prior/ + prior_scheduler/ (UnCLIPScheduler), and a text-encoder folder."""
    parts["prior"].save_pretrained(str(folder / "karlo" / "prior"))
    parts["_unclip"].save_pretrained(str(folder / "karlo" / "prior_scheduler"))
    parts["prior_text_encoder"].save_pretrained(str(folder / "clip-text"))
    parts["prior_tokenizer"].save_pretrained(str(folder / "clip-text"))
    return folder / "karlo", folder / "clip-text"


def stable_unclip_text_pipeline(tmp: Path):
    """`StableUnCLIPPipeline` (text -> Karlo prior -> Stable unCLIP) at toy size: the upstream text path of unclip-l."""
    from diffusers import StableUnCLIPPipeline

    parts = {k: v for k, v in unclip_components(tmp).items() if k not in ("feature_extractor", "image_encoder")}
    prior = {k: v for k, v in karlo_components(tmp).items() if not k.startswith("_")}
    return StableUnCLIPPipeline(**parts, **prior)


UNCLIP_PRESET = {
    "name": "tiny-unclip",
    "encoder": {"type": "open_clip", "model": "local-dir:clip", "embed_dim": DIM},
    "image_decoder": {"type": "stable-unclip", "source": "local-dir:decoder", "embed_dim": DIM, "embed_norm": "auto",
                      "stats": "local-dir:stats.safetensors", "options": {"steps": 2, "height": 64, "width": 64}},
    "text_decoder": {"type": "retrieval", "source": "local-dir:captions.safetensors"},
    "gap": {"type": "mean-shift", "source": "local-dir:stats.safetensors"},
}
KANDINSKY_PRESET = {
    "name": "tiny-kandinsky",
    "encoder": {"type": "open_clip", "model": "local-dir:clip", "embed_dim": DIM},
    "image_decoder": {"type": "kandinsky-2.2", "source": "local-dir:decoder", "prior": "local-dir:prior",
                      "embed_dim": DIM, "embed_norm": "auto", "stats": "local-dir:stats.safetensors",
                      "options": {"steps": 2, "height": 64, "width": 64}},
    "text_decoder": {"type": "retrieval", "source": "local-dir:captions.safetensors"},
    "gap": {"type": "prior", "source": "local-dir:prior", "options": {"steps": 2, "seed": 0}},
}


def save_bundle(folder: Path, preset: dict, decoder, prior=None) -> Path:
    """A `save_pretrained`-style bundle: clip/, decoder/ (and prior/), preset.json with `local-dir:` sources."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_open_clip(folder / "clip")
    decoder.save_pretrained(str(folder / "decoder"))
    if prior is not None:
        prior.save_pretrained(str(folder / "prior"))
    (folder / "preset.json").write_text(json.dumps(preset, indent=2))
    return folder


def probe_images(n: int = 4, size: int = 64):
    """n distinct images of the shapes world."""
    from blend import world

    return [world.render(s, size) for s in world.sample_scenes(n, seed=7)]
