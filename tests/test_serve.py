"""The OpenAI-compatible app on the tiny model: shapes, streaming, controls, errors, limits, metrics."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from lmcontrol.serve.config import ServeSettings  # noqa: E402

SYSTEM_SPEC = "system:You are a terse assistant."


def make_client(lm, start: bool = True, **settings):
    from lmcontrol.engine import Engine
    from lmcontrol.serve.app import create_app
    from lmcontrol.serve.controls import ControlStore

    engine = Engine(lm, max_batch_size=4, max_queue=settings.pop("max_queue", 64))
    store = ControlStore(lm, cache_size=4)
    store.load("terse", SYSTEM_SPEC, trusted=True)
    settings = ServeSettings(**{"max_tokens": 32, "max_prompt_tokens": 64, **settings})
    app = create_app(engine, store, settings, manage_engine=start)
    return TestClient(app), engine


@pytest.fixture(scope="module")
def client(tiny):
    c, _ = make_client(tiny)
    with c:
        yield c


def sse_events(text: str) -> list:
    out = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_shape_and_greedy_matches_generate(client, tiny):
    from lmcontrol.generation import GenerationConfig, generate

    r = client.post("/v1/completions", json={"model": "smollm2", "prompt": "Hello there", "max_tokens": 6,
                                             "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "smollm2"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    ref = generate(tiny, ["Hello there"], GenerationConfig(max_new_tokens=6, chat=False))
    assert choice["text"] == ref.texts[0]
    usage = body["usage"]
    assert usage["completion_tokens"] == len(ref.token_ids[0])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_streaming_sse_matches_non_streaming(client):
    req = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0,
           "stream_options": {"include_usage": True}}
    whole = client.post("/v1/chat/completions", json=req).json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["role"] == "assistant"
    r = client.post("/v1/chat/completions", json={**req, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


def test_n_and_prompt_list_give_one_choice_each(client):
    r = client.post("/v1/completions", json={"model": "smollm2", "prompt": ["a b", "c d"], "n": 2, "max_tokens": 3,
                                             "temperature": 1.0, "seed": 3})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]


def test_seeded_sampling_is_reproducible(client):
    req = {"model": "smollm2", "prompt": "Once", "max_tokens": 8, "temperature": 1.0, "seed": 7}
    a = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    b = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    assert a == b


def test_stop_string_is_cut_and_never_streamed(client, tiny):
    base = client.post("/v1/completions", json={"model": "smollm2", "prompt": "x", "max_tokens": 12,
                                                "temperature": 0}).json()["choices"][0]["text"]
    stop = base[3:6]
    assert stop, base
    req = {"model": "smollm2", "prompt": "x", "max_tokens": 12, "temperature": 0, "stop": [stop]}
    cut = client.post("/v1/completions", json=req).json()["choices"][0]
    assert cut["text"] == base[: base.find(stop)] and cut["finish_reason"] == "stop"
    events = sse_events(client.post("/v1/completions", json={**req, "stream": True}).text)
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == cut["text"]


def test_loaded_control_as_model_and_as_at_name(client, tiny):
    models = client.get("/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "smollm2" and "smollm2:terse" in ids
    card = next(m for m in models["data"] if m["id"] == "smollm2:terse")
    assert card["parent"] == "smollm2" and card["spec"] == SYSTEM_SPEC
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}
    by_model = client.post("/v1/chat/completions", json={"model": "smollm2:terse", **chat}).json()
    by_at = client.post("/v1/chat/completions", json={"model": "smollm2", "controls": ["@terse"], **chat}).json()
    by_spec = client.post("/v1/chat/completions", json={"model": "smollm2", "controls": [SYSTEM_SPEC], **chat}).json()
    plain = client.post("/v1/chat/completions", json={"model": "smollm2", **chat}).json()
    texts = [b["choices"][0]["message"]["content"] for b in (by_model, by_at, by_spec, plain)]
    assert texts[0] == texts[1] == texts[2]
    from lmcontrol.generation import GenerationConfig, generate

    ref = generate(tiny, ["Hi"], GenerationConfig(max_new_tokens=6, system="You are a terse assistant."))
    assert texts[0] == ref.texts[0]


def test_load_and_unload_at_run_time(client):
    r = client.post("/v1/controls/load", json={"name": "poet", "spec": "system:Answer like a poet."})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "smollm2:poet"
    assert "smollm2:poet" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    listed = client.get("/v1/controls").json()
    assert "poet" in [c["name"] for c in listed["data"]] and "system" in listed["kinds"]
    ok = client.post("/v1/completions", json={"model": "smollm2:poet", "prompt": "a", "max_tokens": 2})
    assert ok.status_code == 200
    assert client.post("/v1/controls/unload", json={"name": "poet"}).status_code == 200
    gone = client.post("/v1/completions", json={"model": "smollm2:poet", "prompt": "a", "max_tokens": 2})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert client.post("/v1/controls/unload", json={"name": "poet"}).status_code == 404


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "a", "max_tokens": 33}, 400, "max_tokens must be <= 32"),
        ({"prompt": "a", "temperature": -1}, 400, "temperature"),
        ({"prompt": "a", "top_p": 0}, 400, "top_p"),
        ({"prompt": "a", "n": 99}, 400, "n must be"),
        ({"prompt": "a", "logprobs": 2}, 400, "logprobs"),
        ({"prompt": "a", "presence_penalty": 1.0}, 400, "presence_penalty"),
        ({"prompt": "word " * 200}, 400, "tokens; the limit is 64"),
        ({"prompt": "a", "controls": ["nosuchkind:x"]}, 400, "unknown control kind"),
        ({"prompt": "a", "controls": ["best-of:2,reward=py:os:system"]}, 400, "imports code"),
        ({"prompt": "a", "controls": ["recontrol:/etc"]}, 400, "outside the directories"),
        ({"prompt": "a", "controls": ["@nope"]}, 400, "no loaded control"),
        ({"prompt": "a", "controls": ["system"] * 5}, 400, "at most 4 controls"),
        ({"prompt": "a", "stop": ["", "x"]}, 400, "stop"),
        ({"prompt": "a", "seed": -1}, 400, "seed"),
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": [1, 2, 3]}, 400, "prompt"),
        ({"model": "gpt-4", "prompt": "a"}, 404, "does not exist"),
    ],
)
def test_bad_input_is_4xx_with_openai_error_body(client, body, status, needle):
    r = client.post("/v1/completions", json={"model": "smollm2", **body})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_chat_prompt_length_counts_the_template(client, tiny):
    from lmcontrol.serve.completions import _count_tokens

    msgs = [{"role": "user", "content": "Hi there"}]
    n = _count_tokens(tiny, messages=msgs)
    assert n > len(tiny.tokenizer("Hi there")["input_ids"]) + 3  # the template's role markers count too
    long = [{"role": "user", "content": "word " * 60}]
    r = client.post("/v1/chat/completions", json={"model": "smollm2", "messages": long, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_malformed_json_and_unknown_routes(client):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    assert client.post("/v1/chat/completions", json={"model": "smollm2", "messages": []}).status_code == 400
    assert client.get("/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/completions").status_code == 405


def test_full_queue_is_429_with_retry_after(tiny):
    c, engine = make_client(tiny, start=False, max_queue=1, retry_after=3)
    with c:  # the engine never runs, so the first request fills the queue
        req = {"model": "smollm2", "prompt": "a", "max_tokens": 2, "n": 2}
        r = c.post("/v1/completions", json=req)
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["type"] == "rate_limit_error"


def test_healthz_metrics_and_playground(client):
    client.post("/v1/completions", json={"model": "smollm2", "prompt": "a", "max_tokens": 2})
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"] == "smollm2" and "queue_depth" in h["engine"]
    text = client.get("/metrics").text
    for name in ("lmcontrol_queue_depth", "lmcontrol_batch_size", "lmcontrol_tokens_per_second",
                 "lmcontrol_request_latency_seconds_bucket", "lmcontrol_time_to_first_token_seconds_bucket",
                 "lmcontrol_engine_queue_depth", "lmcontrol_engine_requests_finished",
                 'lmcontrol_requests_total{endpoint="/v1/completions",status="200"}'):
        assert name in text, name
    page = client.get("/")
    assert page.status_code == 200 and "lmcontrol playground" in page.text
    assert client.get("/playground/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/score" in spec["paths"]


def test_score_endpoint_validates_metric_names(client):
    r = client.post("/v1/score", json={"texts": ["hi"], "metrics": ["nope"]})
    assert r.status_code == 400 and "unknown score metric" in r.json()["error"]["message"]


def test_request_timeout_is_408_and_an_error_event_when_streaming(tiny):
    import time

    from lmcontrol.controls import Control

    class Slow(Control):
        name = "slow"

        def process_logits(self, logits, ctx):
            time.sleep(0.05)
            return logits

    c, _ = make_client(tiny, request_timeout=0.3)
    c.app.state.controls.add("slow", Slow())
    with c:
        req = {"model": "smollm2:slow", "prompt": "a", "max_tokens": 30, "temperature": 0}
        r = c.post("/v1/completions", json=req)
        assert r.status_code == 408 and r.json()["error"]["code"] == "timeout"
        events = sse_events(c.post("/v1/completions", json={**req, "stream": True}).text)
        assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "timeout_error"


def test_streaming_n2_gives_each_choice_its_role_text_and_finish(client):
    req = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "n": 2,
           "temperature": 1.0, "seed": 1, "stream": True}
    chunks = sse_events(client.post("/v1/chat/completions", json=req).text)[:-1]
    whole = client.post("/v1/chat/completions", json={**req, "stream": False}).json()
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["delta"]["role"] == "assistant"
        assert sum(1 for c in mine if c["finish_reason"]) == 1
        text = "".join(c["delta"].get("content") or "" for c in mine)
        assert text == whole["choices"][i]["message"]["content"]
