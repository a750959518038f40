"""The same FastAPI app as a Ray Serve deployment: N replicas, each with its own engine, and requests for one
artifact routed to the replicas that already hold it (Ray Serve model multiplexing).

Run it with ``lmcontrol serve --ray --replicas N`` or ``serve run lmcontrol.serve.ray_app:app`` (on a cluster:
``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the others, then either command on the
head). A client names an artifact in the body as usual (``"model": "smollm2:pirate"``) and, to be routed to a
replica that has it loaded, also in the header ``serve_multiplexed_model_id: smollm2:pirate``: Ray's router
prefers replicas whose multiplexed loader already returned that id, and a replica loads it on first use
(``load_artifact``), keeping at most ``MAX_ARTIFACTS_PER_REPLICA`` (least recently used unloaded).

Which artifacts a replica may load on demand is the ``catalogue`` (NAME -> control spec); the default holds
the committed control artifacts (``default_catalogue()``), and ``--control NAME=SPEC`` adds to it and
pre-loads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from lmcontrol.serve.config import ServeSettings
from lmcontrol.serve.server import ServerConfig, build
from lmcontrol.settings import ARTIFACTS_DIR

log = logging.getLogger(__name__)

MAX_ARTIFACTS_PER_REPLICA = 4
CONTROL_KIND = {"prefix.kv": "prefix", "prefix.compressed": "compressed", "recontrol.value_network": "recontrol",
                "dglm.prompter": None}  # artifact kind -> --control kind (None: needs more than one artifact)


def default_catalogue() -> dict[str, str]:
    """NAME -> spec for every committed artifact that is a control on its own (``compressed-pirate`` -> pirate)."""
    import json

    out = {}
    for config in sorted(ARTIFACTS_DIR.glob("*/config.json")):
        kind = CONTROL_KIND.get(json.loads(config.read_text()).get("kind", ""))
        if kind:
            name = config.parent.name.removeprefix("compressed-")
            out[name] = f"{kind}:{config.parent}"
    return out


class _Held:
    """What the multiplexed loader returns; Ray calls ``__del__`` when it evicts the artifact."""

    def __init__(self, store: Any, name: str) -> None:
        self.store, self.name = store, name

    def __del__(self) -> None:
        self.store.unload(self.name)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
@serve.ingress()
class LMControlDeployment:
    """One replica: a model, its engine, its control store and the app over them."""

    def __init__(self, config: ServerConfig, catalogue: dict[str, str] | None = None) -> None:
        self.config = config
        self.catalogue = {**default_catalogue(), **dict(catalogue or {}), **dict(config.controls)}
        self.engine, self.store = build(config)

    def __serve_build_asgi_app__(self) -> Any:
        from lmcontrol.serve.app import create_app
        from lmcontrol.serve.errors import APIError, error_response

        app = create_app(self.engine, self.store, self.config.settings)

        @app.middleware("http")
        async def multiplex(request: Any, call_next: Any) -> Any:
            model_id = serve.get_multiplexed_model_id()
            if model_id:
                try:
                    await self.load_artifact(model_id)
                except APIError as e:
                    return error_response(e.status, e.message, param="model", code=e.code)
            return await call_next(request)

        return app

    @serve.multiplexed(max_num_models_per_replica=MAX_ARTIFACTS_PER_REPLICA)
    async def load_artifact(self, model_id: str) -> _Held:
        """Load the catalogue artifact ``MODEL:NAME`` (or ``NAME``) into this replica's store."""
        from lmcontrol.serve.errors import APIError

        name = model_id.rpartition(":")[2]
        if name == self.config.settings.model_name:
            return _Held(_NoStore(), name)
        spec = self.catalogue.get(name)
        if spec is None:
            raise APIError(404, f"no artifact '{name}' in this deployment's catalogue "
                           f"({', '.join(sorted(self.catalogue)) or 'empty'})", code="model_not_found")
        await asyncio.to_thread(self.store.load, name, spec, trusted=True)
        return _Held(self.store, name)


class _NoStore:
    def unload(self, name: str) -> bool:
        return False


def deployment(config: ServerConfig, replicas: int = 1, catalogue: dict[str, str] | None = None) -> Any:
    """The bound application (``serve.run`` it); each replica asks for one CPU, and one GPU with ``--device cuda``."""
    resources = {"num_cpus": 1, **({"num_gpus": 1} if config.device == "cuda" else {})}
    return LMControlDeployment.options(num_replicas=replicas, ray_actor_options=resources).bind(config, catalogue)


def app_builder(args: dict[str, str]) -> Any:
    """``serve run lmcontrol.serve.ray_app:app_builder replicas=2 model=...`` (string arguments)."""
    settings = ServeSettings(model_name=args.get("served_model_name", "smollm2"))
    config = ServerConfig(model=args.get("model"), device=args.get("device", "auto"), settings=settings,
                          max_batch_size=int(args.get("max_batch_size", 16)))
    return deployment(config, replicas=int(args.get("replicas", 1)))


app = deployment(ServerConfig())  # ``serve run lmcontrol.serve.ray_app:app``


def run_ray(config: ServerConfig, host: str, port: int, replicas: int) -> None:
    """``lmcontrol serve --ray``: start (or join, with RAY_ADDRESS) a Ray cluster and serve until interrupted."""
    import signal
    import time

    import ray

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # `kill PID` shuts Serve down like Ctrl-C
    ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(config, replicas=replicas), name="lmcontrol", route_prefix="/")
    log.info("Ray Serve: %d replica(s) on http://%s:%d", replicas, host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
