"""`glmops serve` (and `python -m glmops.server`): start the API server on the target.

This module is imported by the controller's CLI to build its help, so it imports nothing heavy at
module level: fastapi, uvicorn, torch and transformers load only when the server starts.
"""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="api_server.yaml (see docs/server.md).")
@click.option("--model-path", help="Overrides model_path.")
@click.option("--host", help="Overrides host (default 127.0.0.1).")
@click.option("--port", type=int, help="Overrides port (default 6006).")
@click.option("--backend", type=click.Choice(["transformers", "llama_cpp", "chatglm_cpp", "vllm"]), help="Overrides backend.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu", "mps"]), help="Overrides device.")
@click.option("--check-config", is_flag=True, help="Only check the config file and exit.")
def serve(config_path: str | None, model_path: str | None, host: str | None, port: int | None, backend: str | None,
          device: str | None, check_config: bool) -> None:
    """Start the OpenAI-compatible ChatGLM3 API server.

    \b
    Every config key can also be set with GLMOPS_SERVER_<KEY>, e.g. GLMOPS_SERVER_PORT=6006.
    """
    from glmops.errors import GlmopsError
    from glmops.server.config import load_config

    try:
        config = load_config(config_path, {"model_path": model_path, "host": host, "port": port, "backend": backend, "device": device})
    except GlmopsError as exc:
        click.secho(f"ERROR in the server config: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    if check_config:
        click.echo("config ok")
        return
    if config.backend == "vllm":
        from glmops.server.vllm_launcher import exec_vllm

        exec_vllm(config)
        return
    from glmops.server.runner import run_server

    sys.exit(run_server(config))
