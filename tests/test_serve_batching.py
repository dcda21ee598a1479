"""The model batcher: rows of concurrent callers share batches and keep their own outputs, one bad row fails
only its own caller, a lone caller does not wait for a batch to fill, and the model process gives what the
model in the server's own process gives."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch


def _parallel(fn, args):
    """fn(a) for every a, each in its own thread, all at once -> {a: result or the exception it raised}."""
    out, threads = {}, []

    def one(a):
        try:
            out[a] = fn(a)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[a] = e
    for a in args:
        threads.append(threading.Thread(target=one, args=(a,)))
    [t.start() for t in threads]
    [t.join() for t in threads]
    return out


def test_concurrent_sentences_share_batches_and_each_is_its_own(mini):
    from blend import world
    from blend.serve.batcher import Batcher

    emb = mini.encode_texts([world.caption(s) for s in world.sample_scenes(12, seed=5)])
    alone = mini.decode_texts(emb)
    b = Batcher(mini, max_batch=16, wait_ms=200)
    try:
        got = _parallel(lambda i: b.run("text", emb[i:i + 1])[0], range(12))
        assert [got[i] for i in range(12)] == alone
        assert b.batches < 12  # some rows shared a batch
    finally:
        b.close()


class _Fussy:
    """A stand-in model whose sentence decoder refuses a whole batch when any row is marked bad (row[0] < 0)."""

    def decode_texts(self, emb):
        if (emb[:, 0] < 0).any():
            raise ValueError("embeddings: a bad row")
        return [f"row {float(r[1]):g}" for r in emb]


def test_one_bad_row_fails_only_its_own_caller():
    from blend.serve.batcher import Batcher

    b = Batcher(_Fussy(), max_batch=8, wait_ms=300)
    rows = {i: torch.tensor([[-1.0 if i == 3 else 1.0, float(i)]]) for i in range(6)}

    try:
        got = _parallel(lambda i: b.run("text", rows[i])[0], range(6))
    finally:
        b.close()
    assert isinstance(got[3], ValueError) and "bad row" in str(got[3])
    assert all(got[i] == f"row {i}" for i in range(6) if i != 3)


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(mini):
    """With a 5 s batch wait, one request in flight is answered at once: nobody else could fill the batch."""
    import time

    from blend.serve.batcher import Batcher

    emb = mini.encode_texts(["a red circle"])
    b = Batcher(mini, max_batch=8, wait_ms=5000)
    try:
        with b.working():
            t = time.perf_counter()
            b.run("image", emb, [0])
            b.run("text", emb)
            assert time.perf_counter() - t < 4  # not 2 x 5 s
    finally:
        b.close()


@pytest.fixture(scope="module")
def process_app(mini, tmp_path_factory):
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(model_process=True, model_threads=1),
                     home=tmp_path_factory.mktemp("home"))
    with TestClient(app) as client:
        yield client, app


def _image(uri):
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), np.int16)


def test_the_model_process_gives_what_the_model_in_process_gives(process_app, mini):
    from blend import world

    client, app = process_app
    assert app.state.engine.process is not None and app.state.engine.process.pid
    for scene in world.sample_scenes(4, seed=8):
        r = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": world.caption(scene)}], "seed": 3})
        assert r.status_code == 200, r.text
        out = r.json()
        emb = mini.encode_texts([world.caption(scene)])
        assert np.allclose(out["embedding"], emb[0].tolist(), atol=1e-5)
        assert out["texts"] == mini.decode_texts(emb)
        assert np.abs(_image(out["images"][0]) - np.asarray(mini.decode_images(emb, seed=3)[0], np.int16)).max() <= 2


def test_a_killed_model_process_costs_a_503_at_most_and_comes_back(process_app):
    import os
    import signal
    import time

    client, app = process_app
    body = {"terms": [{"kind": "text", "value": "a large red star on a blue background"}]}
    assert client.post("/v1/mix", json=body).status_code == 200
    old = app.state.engine.process.pid
    os.kill(old, signal.SIGKILL)
    time.sleep(0.5)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] and "model process" in r.json()["error"]
    for _ in range(120):  # the restart runs in the background; requests meanwhile wait for it or get a 503
        r = client.post("/v1/mix", json=body)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200 and client.get("/readyz").status_code == 200:
            break
        time.sleep(0.5)
    assert r.status_code == 200 and app.state.engine.process.pid != old
    assert client.get("/readyz").status_code == 200


def test_rows_of_every_kind_and_setting_interleaved_are_all_answered_right(mini):
    """36 callers at once, each one row of a kind (image at two step settings, sentence, image encoding, text
    encoding): rows of another key are held back and decoded later, none is lost or answered wrongly."""
    from blend import world
    from blend.serve.batcher import Batcher

    scenes = world.sample_scenes(6, seed=9)
    caps = [world.caption(s) for s in scenes]
    emb = mini.encode_texts(caps)
    pictures = [world.render(s) for s in scenes]
    calls = [(kind, i) for i in range(6) for kind in ("image", "image4", "text", "encode_image", "encode_text")]
    b = Batcher(mini, max_batch=4, wait_ms=50)

    def call(c):
        kind, i = c
        if kind.startswith("image"):
            return b.run("image", emb[i:i + 1], [i], steps=4 if kind == "image4" else None)[0]
        if kind == "text":
            return b.run("text", emb[i:i + 1])[0]
        if kind == "encode_image":
            return b.run("encode_image", [pictures[i]])[0]
        return b.run("encode_text", [caps[i]])[0]
    try:
        got = _parallel(call, calls)
    finally:
        b.close()
    assert not [c for c, out in got.items() if isinstance(out, Exception)], got
    for (kind, i), out in got.items():
        if kind.startswith("image"):
            assert world.read_attributes(out).matches(scenes[i]), (kind, i)
        elif kind == "text":
            assert out == mini.decode_texts(emb[i:i + 1])[0]
        elif kind == "encode_image":
            assert torch.allclose(out, mini.encode_images([pictures[i]])[0], atol=1e-5)
        else:
            assert torch.allclose(out, emb[i], atol=1e-5)


class _Stuck:
    """A stand-in model whose sentence decoder waits until released, so rows pile up in the queue."""
    name, preset, embed_dim = "stuck", {"name": "stuck"}, 2

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def check_embeddings(self, emb, name="embeddings"):
        return torch.as_tensor(emb, dtype=torch.float32).reshape(-1, 2)

    def decode_texts(self, emb):
        self.entered.set()
        self.release.wait(30)
        return ["ok"] * len(emb)


def test_readyz_reason_when_the_queue_is_full_and_429_past_it():
    from blend.serve import ServeConfig
    from blend.serve.batcher import QueueFull
    from blend.serve.engine import Engine

    model = _Stuck()
    engine = Engine(model, ServeConfig(max_queue=3, max_batch=1, batch_wait_ms=0))
    try:
        first = threading.Thread(target=engine.decode_texts, args=([[1.0, 0.0]],))
        first.start()  # the worker takes this row and waits inside the model
        assert model.entered.wait(10)
        futures = engine.batcher.submit("text", torch.ones(3, 2))
        assert engine.ready() == (False, "the model queue is full (3 rows waiting)")
        with pytest.raises(QueueFull):
            engine.batcher.submit("text", torch.ones(1, 2))
        model.release.set()
        assert [f.result(10) for f in futures] == ["ok"] * 3
        first.join(10)
        assert engine.ready() == (True, "")
    finally:
        model.release.set()
        engine.close()


def test_the_model_process_does_not_run_the_parents_script_again(tmp_path):
    """Under `python app.py` the spawned model process ran app.py again (as `__mp_main__`), importing the UI."""
    import os
    import subprocess
    import sys

    script = tmp_path / "serve_script.py"
    script.write_text(
        "import os, sys\n"
        "if __name__ == '__mp_main__':\n"
        "    open(os.environ['MARK'], 'w').close()\n"
        "if __name__ == '__main__':\n"
        "    import blend\n"
        "    from blend.serve.worker import ModelProcess\n"
        "    p = ModelProcess(blend.load('shapes-mini', device='cpu'), threads=1)\n"
        "    print(p.encode_texts(['a red star']).shape[1], __file__ == sys.argv[0])\n"
        "    p.close()\n")
    mark = tmp_path / "ran-in-child"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "MARK": str(mark)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["128", "True"]  # the child answered; the parent's __file__ is back
    assert not mark.exists()


class _Piped:
    """A stand-in pipelined model (as the model process): `submit` returns at once and a reply is given only
    when the test releases it; a batch with a bad row (row[0] < 0) fails whole."""

    def __init__(self):
        self.sent, self.replies, self.lock = [], [], threading.Lock()
        self.unanswered = self.most_unanswered = 0

    def submit(self, method, emb):
        from concurrent.futures import Future
        f = Future()
        with self.lock:
            self.sent.append(len(emb))
            self.unanswered += 1
            self.most_unanswered = max(self.most_unanswered, self.unanswered)
            self.replies.append((f, emb))
        return f

    def answer_one(self):
        with self.lock:
            f, emb = self.replies.pop(0)
            self.unanswered -= 1
        if (emb[:, 0] < 0).any():
            f.set_exception(ValueError("embeddings: a bad row"))
        else:
            f.set_result(([f"row {float(r[1]):g}" for r in emb], 0.001))

    def decode_texts(self, emb):  # a row alone, after its batch failed
        f = self.submit("decode_texts", emb)
        self.answer_one()
        return f.result()[0]


def test_a_pipelined_model_gets_the_next_batch_before_the_last_is_answered_and_never_more_than_two():
    import time

    from blend.serve.batcher import Batcher

    model = _Piped()
    b = Batcher(model, max_batch=2, wait_ms=0)
    assert b.pipelined
    rows = {i: torch.tensor([[-1.0 if i == 5 else 1.0, float(i)]]) for i in range(8)}
    out = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, _try(lambda: b.run("text", rows[i])[0])))
               for i in range(8)]
    try:
        [t.start() for t in threads]
        deadline = time.monotonic() + 10
        while len(model.sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time enough for a third batch to be sent, were that allowed
        assert len(model.sent) == 2 and model.most_unanswered == 2  # two in flight, none answered yet
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 20:
            if model.replies:
                model.answer_one()
            time.sleep(0.005)
    finally:
        b.close()
    assert model.most_unanswered == 2
    assert isinstance(out[5], ValueError)  # the bad row fails its own caller only
    assert {i: out[i] for i in range(8) if i != 5} == {i: f"row {i}" for i in range(8) if i != 5}


def _try(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the test looks at it
        return e


def test_the_model_process_answers_calls_in_flight_in_order_and_none_is_lost_when_it_dies(mini):
    import os
    import signal

    from blend import world
    from blend.serve.batcher import Unavailable
    from blend.serve.worker import ModelProcess

    caps = [world.caption(s) for s in world.sample_scenes(6, seed=3)]
    want = mini.encode_texts(caps)
    p = ModelProcess(mini, threads=1)
    try:
        futures = [p.submit("encode_texts", [c]) for c in caps]  # all sent before any reply is read
        for f, w in zip(futures, want):
            assert torch.allclose(f.result(60)[0][0], w, atol=1e-5)
        emb = want.repeat(3, 1)
        futures = [p.submit("decode_images", emb, seed=list(range(18))) for _ in range(4)]
        os.kill(p.pid, signal.SIGKILL)
        for f in futures:  # each answered, or told the process stopped: none waits for ever
            assert f.exception(60) is None or isinstance(f.exception(), Unavailable)
        assert torch.allclose(p.encode_texts(caps[:1])[0], want[0], atol=1e-5)  # a new child took the call
        assert p.starts == 2
    finally:
        p.close()
