"""Registry entries for serving (light: no FastAPI, torch or Ray at import): ``lmcontrol serve`` and
``lmcontrol bench serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol.registry import lazy, register_command, register_suite


def _serve_factory() -> Any:
    def serve(
        host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 = every interface).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        model: Annotated[str | None, typer.Option(help="HF id or local path; default: embedded SmolLM2-135M.")] = None,
        served_model_name: Annotated[str, typer.Option(help="The name clients send as 'model'.")] = "smollm2",
        control: Annotated[
            list[str] | None,
            typer.Option("--control", "-c", help="NAME=SPEC loaded at start-up, served as MODEL:NAME (repeatable)."),
        ] = None,
        max_batch_size: Annotated[int, typer.Option(help="Rows the engine decodes per step.")] = 16,
        max_queue: Annotated[int, typer.Option(help="Waiting requests before 429.")] = 256,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
        weights: Annotated[
            str, typer.Option(help="dense | fp16-packed (CPU: linear weights as fp16 for fbgemm, ~1.5x at batch 8).")
        ] = "dense",
        max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
        max_prompt_tokens: Annotated[int, typer.Option(help="Longest prompt in tokens.")] = 2048,
        max_controls: Annotated[int, typer.Option(help="Controls per request.")] = 4,
        request_timeout: Annotated[float, typer.Option(help="Seconds before a request is abandoned.")] = 120.0,
        control_root: Annotated[
            list[Path] | None, typer.Option(help="Directory request specs may read (repeatable; default artifacts/).")
        ] = None,
        request_controls: Annotated[
            bool, typer.Option(help="Accept control specs in requests (else only loaded ones, @NAME).")
        ] = True,
        ray: Annotated[bool, typer.Option("--ray", help="Run as a Ray Serve deployment.")] = False,
        replicas: Annotated[int, typer.Option(help="Ray Serve replicas (with --ray).")] = 1,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve controlled generation over an OpenAI-compatible HTTP API, with a web playground at /."""
        from lmcontrol import LMControlError
        from lmcontrol.serve.config import ServeSettings
        from lmcontrol.serve.server import ServerConfig, parse_named_controls, run

        if replicas < 1:
            raise LMControlError(f"--replicas must be >= 1, got {replicas}")
        if replicas > 1 and not ray:
            raise LMControlError("--replicas needs --ray (one process serves one engine)")
        kwargs: dict[str, Any] = {}
        if control_root:
            kwargs["control_roots"] = tuple(p.resolve() for p in control_root)
        settings = ServeSettings(
            model_name=served_model_name,
            max_tokens=max_tokens,
            default_max_tokens=min(128, max_tokens),
            max_prompt_tokens=max_prompt_tokens,
            max_controls=max_controls,
            request_timeout=request_timeout,
            allow_request_controls=request_controls,
            **kwargs,
        )
        config = ServerConfig(
            model=model,
            controls=parse_named_controls(control or []),
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            device=device,
            weights=weights,
            settings=settings,
        )
        if ray:
            from lmcontrol.serve.ray_app import run_ray

            run_ray(config, host=host, port=port, replicas=replicas)
        else:
            run(config, host=host, port=port, log_level=log_level)

    return serve


register_command("serve", _serve_factory, "Serve controlled generation (OpenAI-compatible API, playground at /).")
register_suite(
    "serve",
    lazy("lmcontrol.serve.bench", "make_suite"),
    "the server under load: 16 clients, 8 controls in one batch, TTFT, a 50-client soak",
)
