"""`blend serve --ray`: the ingress's answers when model replicas die (no cluster), and on a local Ray cluster with
2 CPU model replicas: the REST API, @serve.batch batching, and a replica killed under load with no request lost
(each answered 200, sent again to a live replica, or 503 with Retry-After; never a bare 500 or a dropped connection).

Skipped when ray[serve] is not installed. The cluster test takes about a minute (`-m "not ray"` leaves it out):
`python -m pytest tests/test_serve_ray.py -s` prints what happened to the requests when the replica was killed.
"""
from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed: pip install -e '.[ray]'")

from app_support import PRESET, ROOT, free_port, require_models  # noqa: E402


# ---------------------------------------------------------------------------------------------- no cluster
class FakeHandle:
    """A DeploymentHandle whose calls fail with the given exceptions, in order, then answer with `value`."""

    def __init__(self, failures, value=None):
        self.failures, self.value, self.calls = list(failures), value, 0

    def __getattr__(self, method):
        handle = self

        class Call:
            def remote(self, *args, **kw):
                handle.calls += 1
                failure = handle.failures.pop(0) if handle.failures else None
                return Response(failure, handle.value)

        return Call()


class Response:
    def __init__(self, failure, value):
        self.failure, self.value = failure, value

    def result(self, timeout_s=None):
        if self.failure is not None:
            raise self.failure
        return self.value

    def cancel(self):
        pass


def remote_blender(handle, mini, retries=3, ready_timeout_s=0.3):
    from blend.serve.ray_app import RemoteBlender

    return RemoteBlender(handle, mini.preset, mini.embed_dim, retries=retries, timeout_s=30, backoff_s=0.01,
                         ready_timeout_s=ready_timeout_s)


def test_a_call_whose_replica_died_is_sent_again(mini):
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    h = FakeHandle([ActorDiedError(), ActorUnavailableError("node lost", None)], value=["a sentence"])
    assert remote_blender(h, mini).decode_texts(mini.encode_texts(["red"])) == ["a sentence"]
    assert h.calls == 3


def test_lost_replicas_become_503_and_full_queues_429_with_retry_after(mini, tmp_path):
    from fastapi.testclient import TestClient
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from blend.serve import ServeConfig, create_app

    emb = [round(x, 6) for x in mini.encode_texts(["red"])[0].tolist()]
    for failures, status in (([ActorDiedError()] * 10, 503),
                             ([BackPressureError(num_queued_requests=9, max_queued_requests=8)], 429)):
        h = FakeHandle(failures)
        app = create_app(remote_blender(h, mini, retries=2), config=ServeConfig(), home=tmp_path)
        with TestClient(app) as client:
            r = client.post("/v1/decode", json={"embeddings": [emb]})
            assert r.status_code == status, r.text
            assert r.headers["retry-after"] and r.json()["error"] and r.json()["error_id"]
            assert "Traceback" not in r.text and "/" not in r.json()["error"]
            assert client.get("/healthz").status_code == 200
        assert h.calls == (3 if status == 503 else 1)  # the first try and 2 retries; back-pressure is not retried


def test_a_bad_input_is_not_retried(mini):
    from ray.exceptions import RayTaskError

    cause = ValueError("texts[0]: 'zebra' is not a word this model knows")
    err = RayTaskError("encode_texts", "traceback", cause).as_instanceof_cause()
    h = FakeHandle([err])
    with pytest.raises(ValueError, match="zebra"):
        remote_blender(h, mini).encode_texts(["zebra"])
    assert h.calls == 1


def test_readyz_is_200_only_while_a_model_replica_answers(mini, tmp_path):
    from fastapi.testclient import TestClient
    from ray.exceptions import ActorDiedError
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import DeploymentUnavailableError

    from blend.serve import ServeConfig, create_app

    info = {"name": mini.name, "embed_dim": mini.embed_dim}
    cases = [([], 200, ""),
             ([TimeoutError()], 503, "no model replica answered within 0.3 s"),
             ([ActorDiedError()] * 1000, 503, "no model replica answered within 0.3 s"),  # asked again till then
             ([DeploymentUnavailableError(DeploymentID("BlendWorker", "blend"))], 503,
              "the model deployment is unavailable")]
    for failures, status, why in cases:
        h = FakeHandle(failures, value=info)
        with TestClient(create_app(remote_blender(h, mini), config=ServeConfig(), home=tmp_path)) as client:
            r = client.get("/readyz")
            assert r.status_code == status, r.text
            if status == 503:
                assert r.json()["error"] == f"not ready: {why}" and r.json()["error_id"]
                assert r.headers["retry-after"]
            else:
                assert r.json() == {"status": "ready", "preset": mini.name}
            assert client.get("/healthz").status_code == 200  # the process is up either way
        assert h.calls >= 1

    # a model call answered in the last ready_timeout_s is proof enough: no probe waits behind busy replicas
    h = FakeHandle([], value=["a sentence"])
    blender = remote_blender(h, mini, ready_timeout_s=60)
    blender.decode_texts(mini.encode_texts(["red"]))
    with TestClient(create_app(blender, config=ServeConfig(), home=tmp_path)) as client:
        assert client.get("/readyz").status_code == 200
    assert h.calls == 1


def test_the_readme_config_file_is_valid_and_builds_its_autoscaling():
    import re

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from blend.serve.ray_app import application, build

    section = (ROOT / "README.md").read_text().split("<!-- serve:start -->")[1].split("<!-- serve:end -->")[0]
    config = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, re.S)[0])
    ServeDeploySchema.model_validate(config)  # Ray's own schema for `serve run` / `serve deploy`
    app = config["applications"][0]
    assert app["import_path"] == "blend.serve.ray_app:build"
    build(app["args"])  # the application builds from exactly these args
    args = {**app["args"], "front": "local"}  # the model deployment alone, to read its options
    worker = application(**args)._bound_deployment
    scaling = worker._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (args["replicas"], args["max_replicas"])
    assert worker.ray_actor_options["num_gpus"] == args["num_gpus"]
    with pytest.raises(ValueError, match="replicas"):
        build({"replicas": "two"})
    with pytest.raises(ValueError, match="unknown"):
        build({"replics": 2})


# ---------------------------------------------------------------------------------------------- a local cluster
@pytest.fixture(scope="module")
def ray_url():
    import ray
    from ray import serve

    from blend.serve.ray_app import APP_NAME, application

    require_models()
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # replicas import this checkout's blend
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(PRESET, replicas=2, num_cpus=1), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def pixels(data_uri: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB"), float)


def worker_replicas() -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "BlendWorker" in a["name"]]


def retries(client) -> float:
    lines = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith("blend_replica_retries_total")]
    return float(lines[0].split()[-1])


@pytest.mark.ray
def test_ray_serves_the_api_batches_and_loses_nothing_when_a_replica_is_killed(ray_url):
    import httpx
    import numpy as np
    import ray
    from ray import serve

    from blend import world
    from blend.serve.ray_app import APP_NAME

    client = httpx.Client(base_url=ray_url, timeout=180)
    caption = world.caption(world.sample_scenes(1, seed=5)[0])
    mix = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": caption}], "seed": 0})
    assert mix.status_code == 200, mix.text
    assert mix.json()["texts"][0] == caption  # the same app: a caption decodes to itself
    bad = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": "a zebra"}]})  # refused on a replica
    assert bad.status_code == 400 and "zebra" in bad.json()["error"] and "Traceback" not in bad.text
    emb = mix.json()["embedding"]
    assert len(worker_replicas()) == 2

    def decode(seed):
        try:
            return client.post("/v1/decode", json={"embeddings": [emb], "seed": seed})
        except httpx.HTTPError as e:  # a dropped connection is a lost request
            return e

    seeds = list(range(32))
    with ThreadPoolExecutor(16) as pool:  # undisturbed: the reference picture of every seed
        ref = list(pool.map(decode, seeds))
    assert all(r.status_code == 200 for r in ref), [r.text for r in ref if r.status_code != 200][:2]
    worker = serve.get_deployment_handle("BlendWorker", app_name=APP_NAME)
    assert max(worker.info.remote().result()["largest_batch"] for _ in range(4)) > 1  # @serve.batch batched rows
    before = retries(client)

    with ThreadPoolExecutor(16) as pool:  # the same load again; one replica is killed at the first answer
        futures = [pool.submit(decode, s) for s in seeds]
        next(as_completed(futures))
        ray.kill(ray.get_actor(worker_replicas()[0], namespace="serve"), no_restart=True)
        got = [f.result() for f in futures]

    lost = [g for g in got if isinstance(g, Exception)]
    codes = [g.status_code for g in got if not isinstance(g, Exception)]
    resent = retries(client) - before
    print(f"\none of 2 replicas killed under load ({len(seeds)} requests, 16 at a time): {codes.count(200)} answered "
          f"200, {codes.count(503)} answered 503, {len(lost)} lost; {resent:g} model calls sent again")
    assert not lost, lost[:3]
    assert set(codes) <= {200, 503}, codes
    assert resent >= 1  # the kill did hit requests in flight, and they were sent again
    for r, g in zip(ref, got):
        if g.status_code == 503:
            assert g.headers.get("retry-after") and g.json()["error"]
        else:  # a row sent again decodes to the same picture: its own seed, whichever replica
            assert np.abs(pixels(g.json()["images"][0]) - pixels(r.json()["images"][0])).max() <= 2

    deadline = time.monotonic() + 120  # Serve brings the replica count back
    while len(worker_replicas()) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert len(worker_replicas()) == 2
    assert decode(0).status_code == 200


@pytest.mark.ray
def test_a_local_front_serves_the_api_over_the_same_model_replicas(ray_url, mini):
    """`blend serve --ray --front local`: the API in this process, only the model replicas on Ray."""
    from fastapi.testclient import TestClient
    from ray import serve

    from blend import world
    from blend.serve.ray_app import APP_NAME, front_app

    worker = serve.get_deployment_handle("BlendWorker", app_name=APP_NAME)
    caption = world.caption(world.sample_scenes(1, seed=8)[0])
    with TestClient(front_app(worker, PRESET, worker.info.remote().result()["embed_dim"])) as client:
        r = client.post("/v1/mix", json={"terms": [{"kind": "text", "value": caption}], "seed": 0})
        assert r.status_code == 200 and r.json()["texts"][0] == caption
        assert client.get("/readyz").json()["preset"] == mini.name
