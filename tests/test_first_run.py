"""A first run needs no preparation: offline, a real preset fails at once with a message that says how to fetch its
weights; the retrieval caption bank is built from the shipped caption list on first use and cached; what cannot be
built offline (unclip-h's gap statistics) is said in one message naming the preset and the command."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

import blend
from blend import sources

import tiny

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["unclip-l", "unclip-h", "kandinsky-2.2"])
def test_offline_real_preset_fails_fast_naming_the_fix(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing was downloaded
    monkeypatch.setattr(sources, "is_cached", lambda repo: False)
    monkeypatch.setattr(sources, "hub_answers", lambda *a, **k: pytest.fail("offline: the hub must not be asked"))
    import open_clip  # noqa: F401  (import time is not what is measured: hub retries are)

    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        blend.load(name, device="cpu")
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert repr(name) in text and "hf download" in text and "local-dir:" in text
    assert blend.presets.get_preset(name)["image_decoder"]["source"] in text


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "offline", lambda: False)
    monkeypatch.setattr(sources, "is_cached", lambda repo: False)
    asked = []
    monkeypatch.setattr(sources, "hub_answers", lambda repo, timeout=3.0: asked.append(repo) or False)
    with pytest.raises(ValueError, match="cannot be reached.*hf download kakaobrain/karlo-v1-alpha"):
        blend.load("unclip-l", device="cpu")
    assert len(asked) == 1  # one short probe, not one per repository


def test_local_presets_never_touch_the_hub(monkeypatch):
    monkeypatch.setattr(sources, "is_cached", lambda repo: pytest.fail(f"asked the hub cache for {repo}"))
    assert sources.hub_repos(blend.presets.get_preset("shapes-mini")) == []


def test_real_presets_name_every_repository_they_download():
    repos = sources.hub_repos(blend.presets.get_preset("unclip-l"))
    assert repos == ["timm/vit_large_patch14_clip_224.openai", "stabilityai/stable-diffusion-2-1-unclip-small",
                     "kakaobrain/karlo-v1-alpha", "openai/clip-vit-large-patch14"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first-run")
    preset = json.loads(json.dumps(tiny.KANDINSKY_PRESET))
    preset["text_decoder"]["captions"] = "local-dir:captions.txt"
    folder = tiny.save_bundle(tmp / "bundle", preset, tiny.kandinsky_pipeline(), tiny.kandinsky_prior_pipeline(tmp))
    (folder / "captions.txt").write_text("a red cat\na blue dog\na green tree\na yellow house\n")
    return folder


def test_caption_bank_is_built_on_first_use_then_read_back(bundle, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle, folder)
    b = blend.load(str(folder), device="cpu")
    assert not (folder / "captions.safetensors").exists()
    t = b.encode_texts(["a blue dog"])
    sentence = b.decode_texts(b.encode_texts(["a blue dog"], raw=True))[0]
    assert sentence == "a blue dog"  # a raw text embedding finds its own caption
    assert b.decode_texts(t)[0] in {"a red cat", "a blue dog", "a green tree", "a yellow house"}
    assert (folder / "captions.safetensors").is_file()
    assert "building the caption bank" in capsys.readouterr().err

    from blend.decode_text import CaptionBank

    monkeypatch.setattr(CaptionBank, "build", classmethod(lambda *a, **k: pytest.fail("built twice")))
    again = blend.load(str(folder), device="cpu")
    assert again.decode_texts(again.encode_texts(["a green tree"], raw=True))[0] == "a green tree"


def test_read_only_preset_folder_caches_the_bank_in_blend_home(bundle, tmp_path, monkeypatch):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle, folder)
    monkeypatch.setenv("BLEND_HOME", str(tmp_path / "home"))
    from blend.decode_text import CaptionBank

    real_save = CaptionBank.save

    def save(self, path):
        if str(path).startswith(str(folder)):
            raise OSError("read-only")
        return real_save(self, path)

    monkeypatch.setattr(CaptionBank, "save", save)
    b = blend.load(str(folder), device="cpu")
    assert b.decode_texts(b.encode_texts(["a red cat"], raw=True))[0] == "a red cat"
    assert (tmp_path / "home" / "cache" / "captions.safetensors").is_file()


def test_unclip_h_texts_say_what_cannot_be_built_offline(tmp_path):
    from blend.gap import Uncalibrated

    gap = Uncalibrated("unclip-h", "local-dir:unclip-h.stats.safetensors")
    with pytest.raises(ValueError) as err:
        gap.to_image(torch.ones(1, 4), ["a cat"])
    text = str(err.value)
    assert "'unclip-h'" in text and "blend calibrate unclip-h" in text and "models/captions/general.txt" in text
