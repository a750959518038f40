"""The server over real HTTP (uvicorn on a random loopback port): the official ``openai`` client unchanged,
client disconnects freeing their rows, and the ``lmcontrol serve`` command's argument checks."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from lmcontrol.controls import Control  # noqa: E402


class SlowControl(Control):
    """Sleeps in every step so that a request is still running when its client leaves."""

    name = "slow"

    def process_logits(self, logits, ctx):
        time.sleep(0.05)
        return logits


class Recorder:
    """Wraps an engine, keeping every handle it returns."""

    def __init__(self, engine):
        self.engine, self.handles = engine, []
        self.lm = engine.lm

    def submit(self, request):
        handle = self.engine.submit(request)
        self.handles.append(handle)
        return handle

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.fixture(scope="module")
def server(tiny):
    from lmcontrol.engine import Engine
    from lmcontrol.serve.app import create_app
    from lmcontrol.serve.config import ServeSettings
    from lmcontrol.serve.controls import ControlStore
    from lmcontrol.serve.server import uvicorn_in_thread

    engine = Recorder(Engine(tiny, max_batch_size=4))
    store = ControlStore(tiny)
    store.load("terse", "system:You are a terse assistant.", trusted=True)
    store.add("slow", SlowControl(), "slow")
    app = create_app(engine, store, ServeSettings(max_tokens=64))
    srv, thread, port = uvicorn_in_thread(app)
    yield engine, port
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(server):
    _, port = server
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)


def test_openai_client_completions_chat_stream_models(client):
    models = [m.id for m in client.models.list().data]
    assert models[0] == "smollm2" and "smollm2:terse" in models
    comp = client.completions.create(model="smollm2", prompt="Hello", max_tokens=5, temperature=0)
    assert comp.object == "text_completion" and comp.usage.completion_tokens >= 1
    msgs = [{"role": "user", "content": "Say hi"}]
    chat = client.chat.completions.create(model="smollm2:terse", messages=msgs, max_tokens=6, temperature=0)
    text = chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="smollm2:terse", messages=msgs, max_tokens=6, temperature=0,
                                            stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text
    extra = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=6, temperature=0,
                                           extra_body={"controls": ["@terse"], "top_k": 5})
    assert extra.choices[0].message.content == text


def test_openai_client_sees_typed_errors(client):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="smollm2", prompt="a", max_tokens=10_000)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="a")
    with pytest.raises(openai.BadRequestError, match="imports code"):
        client.completions.create(model="smollm2", prompt="a", extra_body={"controls": ["best-of:2,reward=py:os:x"]})


def _wait_cancelled(handle, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not handle.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.done(), "the row was never freed"
    return handle.result(timeout=1).finish_reason


def test_streaming_client_disconnect_cancels_its_row(server):
    import httpx

    engine, port = server
    body = {"model": "smollm2:slow", "prompt": "Once upon", "max_tokens": 60, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # one event, then hang up
    assert _wait_cancelled(engine.handles[-1]) == "cancelled"


def test_non_streaming_client_disconnect_cancels_its_row(server):
    import httpx

    engine, port = server
    body = {"model": "smollm2:slow", "prompt": "Once upon", "max_tokens": 60, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=0.5)
    assert _wait_cancelled(engine.handles[-1]) == "cancelled"


def test_serve_command_rejects_bad_arguments(cli):
    code, _, err = cli("serve", "--device", "tpu")
    assert code == 2 and "--device" in err
    code, _, err = cli("serve", "--replicas", "2")
    assert code == 2 and "--ray" in err
