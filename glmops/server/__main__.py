from glmops.server.cli import serve

serve(prog_name="python -m glmops.server")
