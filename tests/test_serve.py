"""The REST API on shapes-mini: what each endpoint does, users kept apart, limits, and a bad-input corpus."""
from __future__ import annotations

import base64
import io
import json
import threading

import pytest
from PIL import Image

from serve_support import bad_images, odd_images, uri

@pytest.fixture(scope="module")
def served(mini, tmp_path_factory):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    home = tmp_path_factory.mktemp("home")
    app = create_app(mini, config=ServeConfig(max_batch=8, batch_wait_ms=20), home=home)
    with TestClient(app) as client:
        yield client, home, app


@pytest.fixture(scope="module")
def caption():
    from blend import world

    return world.caption(world.sample_scenes(1, seed=3)[0])


def image_of(data_uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))


def test_mix_decodes_a_caption_to_its_scene_and_sentence(served, caption, mini):
    """Over 6 scenes: /v1/mix of a caption draws that scene (all six attributes) and says that caption."""
    from blend import world

    client, _, _ = served
    scenes = world.sample_scenes(6, seed=3, split="train")
    pictures = sentences = 0
    for scene in scenes:
        r = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": world.caption(scene)}], "seed": 0})
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["embedding"]) == mini.embed_dim
        pictures += world.read_attributes(image_of(out["images"][0])).matches(scene)
        sentences += out["texts"][0] == world.caption(scene)
    assert pictures >= len(scenes) - 1 and sentences >= len(scenes) - 1, (pictures, sentences)
    png = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": caption}], "format": "png"})
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size


def test_decode_returns_one_image_per_row(served, caption):
    client, _, _ = served
    e = client.post("/v1/encode", json={"terms": [{"kind": "text", "value": caption}]}).json()["embeddings"][0]
    r = client.post("/v1/decode", json={"embeddings": [e, e], "seed": [0, 1]})
    assert r.status_code == 200
    assert len(r.json()["images"]) == 2 and len(r.json()["texts"]) == 2


def test_path_and_plane_give_n_and_k_squared_images(served, caption):
    client, _, _ = served
    t = {"kind": "text", "value": caption}
    p = client.post("/v1/path", json={"start": t, "end": {"kind": "image", "value": "red-circle-on-blue.png"},
                                      "n": 3}).json()
    assert len(p["images"]) == 3 and len(p["texts"]) == 3
    assert p["texts"][0] == caption
    q = client.post("/v1/plane", json={"a": t, "b": t, "c": {"kind": "image", "value": "red-circle-on-blue.png"},
                                       "k": 2}).json()
    assert len(q["images"]) == 4


def test_batched_rows_equal_single_requests(mini):
    """A row's image does not depend on its batch: equal to decoding it alone, within 2 grey levels."""
    import numpy as np
    from blend import world

    texts = [world.caption(s) for s in world.sample_scenes(4, seed=11)]
    emb = mini.encode_texts(texts)
    seeds = [5, 6, 7, 8]
    batch = mini.decode_images(emb, seed=seeds)
    for i in range(4):
        alone = mini.decode_images(emb[i], seed=seeds[i])[0]
        diff = np.abs(np.asarray(alone, np.int16) - np.asarray(batch[i], np.int16)).max()
        assert diff <= 2, (i, diff)
    assert np.abs(np.asarray(batch[0], np.int16) - np.asarray(batch[1], np.int16)).max() > 2


def test_concurrent_requests_are_batched_and_each_keeps_its_own_output(served, mini, caption):
    import numpy as np

    client, _, app = served
    e = client.post("/v1/encode", json={"terms": [{"kind": "text", "value": caption}]}).json()["embeddings"][0]
    alone = {s: mini.decode_images([e], seed=s)[0] for s in range(6)}
    batcher = app.state.engine.batcher
    before, rows_before = batcher.batches, batcher.rows
    results = {}

    def call(s):
        results[s] = client.post("/v1/decode", json={"embeddings": [e], "seed": s}).json()["images"][0]

    threads = [threading.Thread(target=call, args=(s,)) for s in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert batcher.rows - rows_before == 12  # 6 images and 6 sentences ...
    assert batcher.batches - before < 12  # ... and some of them shared a batch
    for s, data in results.items():
        diff = np.abs(np.asarray(image_of(data).convert("RGB"), np.int16) - np.asarray(alone[s], np.int16)).max()
        assert diff <= 2, (s, diff)


def test_directions_are_per_user(served):
    client, home, _ = served
    a, b = {"X-Session-Id": "session-alice"}, {"X-Session-Id": "session-bob01"}
    assert client.post("/v1/directions", json={"name": "mine", "pairs": [["large", "small"]]}, headers=a).status_code == 201
    names_b = [d["name"] for d in client.get("/v1/directions", headers=b).json()["directions"]]
    assert "mine" not in names_b
    assert client.delete("/v1/directions/mine", headers=b).status_code == 400  # bob cannot delete alice's
    assert client.patch("/v1/directions/mine", json={"name": "x"}, headers=b).status_code == 400
    assert client.patch("/v1/directions/mine", json={"name": "ours"}, headers=a).status_code == 200
    mix = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": "circle"}],
                                       "directions": [{"name": "ours", "strength": 1}]}, headers=a)
    assert mix.status_code == 200, mix.text
    assert client.post("/v1/mix", json={"terms": [{"kind": "text", "value": "circle"}],
                                        "directions": [{"name": "ours"}]}, headers=b).status_code == 400
    assert client.delete("/v1/directions/ours", headers=a).status_code == 204
    r = client.get("/v1/directions")
    assert len(r.headers["x-session-id"]) >= 8  # a new session is issued when none is sent


def test_api_keys(mini, tmp_path):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(keys="alice:key-alice-123,bob:key-bob-4567"), home=tmp_path)
    with TestClient(app) as c:
        assert c.get("/v1/presets").status_code == 401
        assert c.get("/v1/presets", headers={"Authorization": "Bearer wrong-key-1"}).status_code == 401
        ka, kb = {"Authorization": "Bearer key-alice-123"}, {"X-API-Key": "key-bob-4567"}
        assert c.get("/v1/presets", headers=ka).json()["current"] == mini.name
        assert c.post("/v1/directions", json={"name": "a1", "pairs": [["large", "small"]]}, headers=ka).status_code == 201
        assert "a1" not in [d["name"] for d in c.get("/v1/directions", headers=kb).json()["directions"]]
        assert c.get("/healthz").status_code == 200  # probes need no key


def test_queue_limit_answers_429_with_retry_after(mini, tmp_path):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(max_queue=2), home=tmp_path)
    with TestClient(app) as c:
        r = c.post("/v1/decode", json={"embeddings": [[0.1] * mini.embed_dim] * 3})
        assert r.status_code == 429 and r.headers["retry-after"]
        assert c.get("/readyz").status_code == 200


def test_readyz_is_503_with_the_reason_when_no_image_can_be_made(mini, tmp_path):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(), home=tmp_path)
    with TestClient(app) as c:
        assert c.get("/readyz").json() == {"status": "ready", "preset": mini.name, "queue": 0}
        app.state.engine.batcher.close()  # the decoder thread stops
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"] == "not ready: the decoder thread has stopped"
        assert c.get("/healthz").status_code == 200


def test_body_limit_and_metrics(mini, tmp_path):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(max_body_bytes=10_000), home=tmp_path)
    with TestClient(app) as c:
        r = c.post("/v1/encode", json={"terms": [{"kind": "text", "value": "x" * 20_000}]})
        assert r.status_code == 413 and "x" * 100 not in r.text
        c.post("/v1/encode", json={"terms": [{"kind": "text", "value": "circle"}]})
        c.post("/v1/encode", json={"terms": [{"kind": "text", "value": "circle"}]})
        m = c.get("/metrics").text
        assert 'blend_cache_lookups_total{result="hit"} 1.0' in m
        assert 'blend_requests_total{endpoint="/v1/encode",status="200"} 2.0' in m
        for name in ("blend_request_seconds", "blend_decode_batch_size", "blend_decode_queue_depth"):
            assert name in m


def test_internal_error_has_an_id_and_no_traceback(mini, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from blend.serve import create_app

    app = create_app(mini, home=tmp_path)

    def boom(*a, **k):
        raise RuntimeError(f"secret path {tmp_path}/x.py line 3")

    monkeypatch.setattr(app.state.engine, "decode_texts", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/decode", json={"embeddings": [[0.1] * mini.embed_dim]})
        assert r.status_code == 500
        assert r.json()["error_id"] and str(tmp_path) not in r.text and "Traceback" not in r.text


# ------------------------------------------------------------------------------------------- bad-input corpus
def corpus(dim: int) -> list[tuple[str, str, object]]:
    """(label, path, JSON body) for >= 60 bad or odd inputs; each must get an answer below 500."""
    T = lambda v, k="text", **kw: {"kind": k, "value": v, **kw}  # noqa: E731
    cases = []
    for name, data in {**bad_images(), **odd_images()}.items():
        cases.append((f"image:{name}", "/v1/encode", {"terms": [T(uri(data), "image")]}))
    cases += [("image:not-base64", "/v1/encode", {"terms": [T("data:image/png;base64,@@@", "image")]}),
              ("image:wrong-prefix", "/v1/encode", {"terms": [T("data:text/html;base64,AAAA", "image")]}),
              ("image:huge-uri", "/v1/encode", {"terms": [T("data:image/png;base64," + "A" * 6_000_000, "image")]}),
              ("image:path-trick", "/v1/encode", {"terms": [T("../../etc/passwd", "image")]}),
              ("image:abs-path", "/v1/encode", {"terms": [T("/etc/passwd", "image")]}),
              ("image:dotfile", "/v1/encode", {"terms": [T(".bashrc", "image")]}),
              ("image:unknown-example", "/v1/encode", {"terms": [T("nope.png", "image")]})]
    for label, text in {"empty": "", "spaces": "   ", "emoji": "🔴🟦", "nul": "a\x00circle", "bell": "red\x07",
                        "over-long": "circle " * 500, "unknown-words": "zebra quantum", "rtl-override": "\u202ered",
                        "surrogate-ish": "\ufffe", "newlines": "\n\n\n"}.items():
        cases.append((f"text:{label}", "/v1/mix", {"terms": [T(text)]}))
    good = [0.1] * dim
    for label, emb in {"nan-string": ["NaN"] * dim, "huge": [1e20] * dim, "zero": [0.0] * dim,
                       "short": [0.1] * (dim - 1), "long": [0.1] * (dim + 1), "empty": [], "ragged": [good, good[:3]],
                       "nested": [[good]], "strings": ["a"] * dim, "too-many-rows": [good] * 100,
                       "bool": [True] * dim, "null": None}.items():
        cases.append((f"emb:{label}", "/v1/decode", {"embeddings": emb}))
    for label, w in {"nan": float("nan"), "inf": float("inf"), "huge": 1e20, "string": "1", "null": None}.items():
        cases.append((f"weight:{label}", "/v1/mix", {"terms": [T("circle", weight=w)]}))
    cases += [("weights:zero", "/v1/mix", {"terms": [T("circle", weight=0), T("square", weight=0)]}),
              ("weights:cancel", "/v1/mix", {"terms": [T("circle", weight=1), T("circle", weight=-1)]})]
    for label, seed in {"string": "x", "null": None, "negative": -1, "2**64": 2**64, "float": 1.5, "bool": True}.items():
        cases.append((f"seed:{label}", "/v1/mix", {"terms": [T("circle")], "seed": seed}))
    cases += [("recipe:unknown-key", "/v1/mix", {"terms": [T("circle")], "noise_level": 3}),
              ("recipe:not-object", "/v1/mix", [1, 2, 3]),
              ("recipe:no-terms", "/v1/mix", {"terms": []}),
              ("recipe:too-many-terms", "/v1/mix", {"terms": [T("circle")] * 50}),
              ("recipe:deep", "/v1/mix", {"terms": [T("circle")], "x": _DEEP}),
              ("recipe:bad-method", "/v1/mix", {"terms": [T("circle")], "method": "cubic"}),
              ("recipe:n-seeds", "/v1/mix", {"terms": [T("circle")], "n_seeds": 1000}),
              ("recipe:steps", "/v1/mix", {"terms": [T("circle")], "steps": 10_000}),
              ("recipe:unknown-direction", "/v1/mix", {"terms": [T("circle")], "directions": [{"name": "nope"}]}),
              ("path:n-1000", "/v1/path", {"start": T("circle"), "end": T("square"), "n": 1000}),
              ("path:antipodal-ok", "/v1/path", {"start": T("circle"), "end": T("circle"), "n": 2}),
              ("plane:k-100", "/v1/plane", {"a": T("circle"), "b": T("square"), "c": T("red"), "k": 100}),
              ("dir:path-name", "/v1/directions", {"name": "../../evil", "pairs": [["large", "small"]]}),
              ("dir:slash-name", "/v1/directions", {"name": "a/b", "pairs": [["large", "small"]]}),
              ("dir:10000-pairs", "/v1/directions", {"name": "big", "pairs": [["large", "small"]] * 10_000}),
              ("dir:empty-pair", "/v1/directions", {"name": "e", "pairs": [["", "small"]]}),
              ("dir:emoji-pair", "/v1/directions", {"name": "e2", "pairs": [["🔴", "small"]]}),
              ("dir:no-sides", "/v1/directions", {"name": "e3"})]
    return cases


class _deep(str):
    """A JSON document nested n levels deep, written as text (json.dumps itself would hit the recursion limit)."""

    def __new__(cls, n):
        return str.__new__(cls, '{"a":' * n + "{}" + "}" * n)


_DEEP = _deep(3000)


def test_bad_input_corpus(served, mini):
    client, home, _ = served
    cases = corpus(mini.embed_dim)
    assert len(cases) >= 60
    answered = {}
    for label, path, body in cases:
        text = json.dumps(body).replace(f'"{_DEEP}"', _DEEP)
        r = client.post(path, content=text, headers={"content-type": "application/json"})  # NaN as is
        answered[label] = r.status_code
        assert r.status_code < 500, (label, r.text[:300])
        if r.status_code >= 400:
            err = r.json()
            assert err.get("error") and err.get("error_id"), label
            assert "Traceback" not in r.text and str(home) not in r.text, label
    refused = [k for k, v in answered.items() if v >= 400]
    for must in ("image:zero-byte", "image:bomb-png", "image:truncated-png", "text:emoji", "text:nul", "emb:huge",
                 "emb:short", "seed:string", "seed:null", "seed:2**64", "recipe:unknown-key", "path:n-1000",
                 "dir:path-name", "dir:10000-pairs", "weight:huge"):
        assert must in refused, must
    for fine in ("image:cmyk-jpeg", "image:16bit-png", "image:la-png", "image:palette-alpha-png",
                 "image:animated-gif", "image:exif-rotated-jpeg"):
        assert answered[fine] == 200, fine
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    written = {p.name for p in home.rglob("*") if p.is_file()}
    assert all(n.endswith((".json", ".lock")) for n in written), written


def test_ui_and_api_side_by_side(mini, tmp_path):
    """`blend serve`: the Gradio UI at / and the REST API under /v1 from one app."""
    from fastapi.testclient import TestClient

    from blend.serve import create_app
    from blend.serve.run import load_demo

    demo = load_demo(mini)
    with TestClient(create_app(mini, demo, home=tmp_path)) as c:
        assert "gradio" in c.get("/").text.lower()
        assert c.get("/v1/presets").json()["current"] == mini.name
        assert c.get("/healthz").status_code == 200
