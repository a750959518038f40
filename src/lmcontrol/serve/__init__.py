"""``lmcontrol serve``: an OpenAI-compatible server over the batching engine, a web playground, Ray Serve.

- ``app.create_app(engine, controls, settings)``: the FastAPI app (completions, chat, SSE, models, controls,
  score, health, metrics, playground);
- ``controls.ControlStore``: loaded controls by name and a cache of controls built from request specs;
- ``server``: build the engine and run uvicorn (the CLI command, registered in ``plugin.py``);
- ``ray_app``: the same app as a Ray Serve deployment (N replicas, model multiplexing by artifact);
- ``bench``: ``lmcontrol bench serve`` (throughput, mixed controls, time to first token, a 50-client soak).

Needs the ``serve`` extra (``pip install -e ".[serve]"``): FastAPI, uvicorn, prometheus-client.
"""
