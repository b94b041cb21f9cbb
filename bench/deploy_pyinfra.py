"""The benchmark playbook's 10 tasks as a pyinfra deploy (run by bench/engine.py)."""

from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

work = f"/tmp/glmops-bench/{host.name}"
files.directory(name="work dir", path=work, mode="755")
files.directory(name="models dir", path=f"{work}/models", mode="755")
files.directory(name="logs dir", path=f"{work}/logs", mode="750")
files.template(name="config from template", src="templates/app.conf.j2", dest=f"{work}/app.conf", mode="644",
               inventory_hostname=host.name, work=work)
files.put(name="static file", src=StringIO("static content\n"), dest=f"{work}/static.txt", mode="644")
files.put(name="env file", src=StringIO(f"MODEL_PATH={work}/models\n"), dest=f"{work}/.env", mode="600")
files.line(name="env line", path=f"{work}/.env", line="^PORT=.*", replace="PORT=6006")
files.line(name="second line", path=f"{work}/app.conf", line="# managed")
server.shell(name="one-time init", commands=[f"test -e {work}/initialised || touch {work}/initialised"])
server.shell(name="one-time shell", commands=[f"test -e {work}/ready.txt || echo ready > {work}/ready.txt"])
