"""The benchmark playbook's 10 tasks as a pyinfra deploy (run by bench/engine.py).

pyinfra has no `creates`: the two one-time commands test for the file in the shell instead (one
remote command each, as the others' check; pyinfra reports them as changed every time)."""

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
files.line(name="port line", path=f"{work}/settings.env", line="^PORT=.*", replace="PORT=6006")
files.line(name="host line", path=f"{work}/settings.env", line="^HOST=.*", replace="HOST=127.0.0.1")
server.shell(name="one-time init", commands=[f"test -e {work}/initialised || touch {work}/initialised"])
server.shell(name="one-time shell", commands=[f"test -e {work}/ready.txt || echo ready > {work}/ready.txt"])
