"""The server on the embedded model with real control artifacts (slow): concurrent requests carrying different
controls share the engine's batch, and each greedy reply equals the same request sent alone."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("uvicorn")

SPECS = {
    "pirate": "compressed:{A}/compressed-pirate",
    "sunny": "compressed:{A}/compressed-sunny",
    "recontrol": "recontrol:{A}/recontrol-hh",
    "steer2": "static-re:{A}/recontrol-hh,scale=2",
    "hh": "system",
}


@pytest.fixture(scope="module")
def server(embedded):
    from lmcontrol.engine import Engine
    from lmcontrol.serve.app import create_app
    from lmcontrol.serve.config import ServeSettings
    from lmcontrol.serve.controls import ControlStore
    from lmcontrol.serve.server import uvicorn_in_thread
    from lmcontrol.settings import ARTIFACTS_DIR

    store = ControlStore(embedded)
    for name, spec in SPECS.items():
        store.load(name, spec.format(A=ARTIFACTS_DIR), trusted=True)
    app = create_app(Engine(embedded, max_batch_size=8), store, ServeSettings(max_tokens=64))
    srv, thread, port = uvicorn_in_thread(app)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


async def _send(base: str, jobs: list[tuple[str, str]], concurrency: int) -> list[str]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:

        async def one(model: str, prompt: str) -> str:
            async with sem:
                body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                        "temperature": 0}
                r = await client.post(base + "/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["message"]["content"]

        return await asyncio.gather(*(one(m, p) for m, p in jobs))


def test_mixed_controls_in_one_batch_equal_each_request_alone(server):
    prompt = "Tell me about the ocean."
    jobs = [("smollm2", prompt)] + [(f"smollm2:{name}", prompt) for name in SPECS]
    together = asyncio.run(_send(server, jobs, concurrency=len(jobs)))
    alone = asyncio.run(_send(server, jobs, concurrency=1))
    assert together == alone
    assert together[1].startswith("Ahoy")  # the pirate compressed prompt's rule
    assert len(set(together)) >= 4  # the controls change the replies
