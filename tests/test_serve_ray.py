"""The Ray Serve deployment, locally with one replica (slow: starts a Ray instance, loads the embedded model).

Checks that the replica serves the same app, and that an artifact named in the ``serve_multiplexed_model_id``
header is loaded on demand by the multiplexed loader (and an unknown one is a 404, not a 5xx)."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def ray_server():
    from ray import serve

    from lmcontrol.serve.ray_app import deployment
    from lmcontrol.serve.server import ServerConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment(ServerConfig(max_batch_size=4, device="cpu")), name="lmcontrol", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_one_replica_serves_the_app_and_multiplexes_artifacts(ray_server):
    import httpx

    assert httpx.get(ray_server + "/healthz", timeout=60).json()["status"] == "ok"
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
    r = httpx.post(ray_server + "/v1/chat/completions", json={"model": "smollm2:pirate", **chat},
                   headers={"serve_multiplexed_model_id": "smollm2:pirate"}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("Ahoy")
    ids = [m["id"] for m in httpx.get(ray_server + "/v1/models", timeout=60).json()["data"]]
    assert ids == ["smollm2", "smollm2:pirate"]
    r = httpx.post(ray_server + "/v1/chat/completions", json={"model": "smollm2:nope", **chat},
                   headers={"serve_multiplexed_model_id": "smollm2:nope"}, timeout=300)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
