"""A wheel that is the whole product (issue 18): `python -m build` makes an sdist and a wheel that carry
playbooks/, roles/, templates/ and inventory/ (glmops/_content in the wheel); the wheel, installed into a
fresh venv outside the checkout, runs from a folder with no checkout in it: `glmops --help`, `glmops init`,
`glmops run example` and `glmops run local`, which deploys the tiny models to a test sshd and installs on
the target a wheel packed again from the installed glmops (roles/glmops_wheel: no source tree there).

The build and the venv are made once for the module; the deploy reuses the test venv's torch and server
packages (a target venv that already holds them, as on AutoDL's image), so it costs seconds, not a torch
download.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, recap, results
from sshd import free_port

pytestmark = pytest.mark.timeout(900)

# what `python -m build` needs from the checkout (a copy is built: the checkout gets no build/ or egg-info)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "glmops", "playbooks", "roles", "templates", "inventory")
CONTENT = ("playbooks", "roles", "templates", "inventory")
# the controller's dependencies (pyproject.toml [project] dependencies), installed from pip's cache
CONTROLLER_DEPS = ("paramiko", "pyyaml", "jinja2", "rich", "click", "ruamel.yaml", "packaging")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def _content_files(root: Path) -> set[str]:
    """The checkout's content files, as paths relative to `root` (no byte-code, no dot files)."""
    out = set()
    for folder in CONTENT:
        for path in (root / folder).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and not any(p.startswith(".") for p in rel.parts) and path.suffix != ".pyc":
                out.add(rel.as_posix())
    return out


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build` of a copy of this checkout: the sdist, then the wheel built from the sdist."""
    work = tmp_path_factory.mktemp("build")
    source = work / "glmops-src"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=JUNK)
        elif path.exists():  # the sdist test below checks that setup.py and MANIFEST.in travel
            shutil.copy2(path, source / name)
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,), (wheel,) = (work / "dist").glob("*.tar.gz"), (work / "dist").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel and the controller's dependencies (nothing else)."""
    outside = tmp_path_factory.mktemp("controller")
    root = outside / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300, cwd=outside)
    # away from the checkout: a glmops.egg-info there (pip install -e) would pass for glmops installed already
    done = subprocess.run([str(root / "bin" / "pip"), "install", "-q", str(dists["wheel"]), *CONTROLLER_DEPS],
                          capture_output=True, text=True, timeout=600, cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "bin" / "glmops").is_file(), done.stdout + done.stderr
    return root


def clean_env() -> dict[str, str]:
    """This environment without anything that points at the checkout (PYTHONPATH, roles, inventory)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GLMOPS_ROLES_PATH", "ANSIBLE_ROLES_PATH", "GLMOPS_INVENTORY")}
    return {**env, "COLUMNS": "200"}


def installed(venv: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the venv's `glmops` in `cwd` (a folder with no checkout in it), with nothing pointing at the checkout."""
    return subprocess.run([str(venv / "bin" / "glmops"), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def site_packages(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def test_sdist_and_wheel_carry_the_content(dists: dict[str, Path]) -> None:
    expected = _content_files(ROOT)
    assert {"playbooks/autodl.yml", "playbooks/local.yml", "roles/api_server/tasks/main.yml",
            "templates/api_server.yaml.j2", "inventory/autodl.yml"} <= expected
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
    prefix = "glmops/_content/"
    assert {n[len(prefix):] for n in names if n.startswith(prefix)} == expected
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with tarfile.open(dists["sdist"]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        members = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert expected <= members, sorted(expected - members)[:10]
    assert {"setup.py", "MANIFEST.in", "pyproject.toml"} <= members and top.startswith("glmops-")


def test_editable_checkout_uses_its_own_folders() -> None:
    """The checkout (and `pip install -e .`) never holds a copy: the content root is the checkout itself."""
    from glmops.shipped import content_root, resolve_playbook

    assert not (ROOT / "glmops" / "_content").exists()
    assert content_root() == ROOT
    assert resolve_playbook("autodl") == resolve_playbook("autodl.yml") == ROOT / "playbooks" / "autodl.yml"


def test_a_file_of_that_name_wins_over_the_shipped_playbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glmops.shipped import resolve_playbook

    monkeypatch.chdir(tmp_path)
    (tmp_path / "autodl").mkdir()  # a folder is no playbook: the name still means the shipped one
    assert resolve_playbook("autodl") == ROOT / "playbooks" / "autodl.yml"
    (tmp_path / "autodl.yml").write_text("- hosts: all\n")
    assert resolve_playbook("autodl.yml") == Path("autodl.yml") and resolve_playbook("autodl") == ROOT / "playbooks" / "autodl.yml"
    assert resolve_playbook("sub/autodl") == Path("sub/autodl")  # a path is never a name


def test_installed_wheel_help_and_bad_name(venv: Path, tmp_path: Path) -> None:
    helped = installed(venv, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "init" in helped.stdout and "run" in helped.stdout, helped.stderr
    missing = installed(venv, "run", "nope", "-i", "localhost,", cwd=tmp_path)
    assert missing.returncode == 3 and "playbook not found: nope" in missing.stderr
    assert "autodl" in missing.stderr and "local" in missing.stderr and "Traceback" not in missing.stderr


def test_installed_wheel_init_writes_an_editable_copy(venv: Path, tmp_path: Path) -> None:
    shipped = site_packages(venv) / "glmops" / "_content"
    target = tmp_path / "mine"
    first = installed(venv, "init", str(target), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for rel in ("playbooks/autodl.yml", "playbooks/files/client_example.py", "inventory/autodl.yml", "inventory/local.yml"):
        assert (target / rel).read_bytes() == (shipped / rel).read_bytes()
        assert f"wrote {target / rel}" in first.stdout
    assert not (target / "roles").exists(), "roles stay shipped unless --roles"
    assert "Next:" in first.stdout and "glmops run playbooks/autodl.yml" in first.stdout
    again = installed(venv, "init", str(target), cwd=tmp_path)
    assert again.returncode == 0 and "wrote" not in again.stdout and "nothing to write" in again.stdout
    edited = target / "inventory" / "autodl.yml"
    edited.write_text("# mine\n")
    refused = installed(venv, "init", str(target), "--roles", cwd=tmp_path)
    assert refused.returncode != 0 and str(edited) in refused.stderr and "--force" in refused.stderr
    assert edited.read_text() == "# mine\n" and not (target / "roles").exists(), "a refused init writes nothing"
    forced = installed(venv, "init", str(target), "--roles", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert edited.read_bytes() == (shipped / "inventory" / "autodl.yml").read_bytes()
    assert (target / "roles" / "api_server" / "tasks" / "main.yml").is_file() and (target / "templates" / "api_server.yaml.j2").is_file()
    assert not (target / "roles" / "glmops_wheel").exists(), "glmops_wheel builds the running glmops: it stays shipped"


def test_project_roles_and_roles_path_win_over_the_shipped_ones(venv: Path, tmp_path: Path) -> None:
    """A shipped playbook run by name still takes ./roles and --roles-path before the wheel's roles."""
    probe = ("import sys\nfrom glmops.playbook.loader import load_playbook\nfrom glmops.shipped import resolve_playbook\n"
             "book = load_playbook(str(resolve_playbook('local')), extra_roles_paths=sys.argv[1:])\n"
             "print(book.plays[0].roles[0].path)\n")
    mine = tmp_path / "roles" / "glmops_wheel" / "tasks"
    mine.mkdir(parents=True)
    (mine / "main.yml").write_text("- debug: {msg: mine}\n")
    def role_of(cwd: Path, *roles_path: str) -> str:
        done = subprocess.run([str(venv / "bin" / "python"), "-c", probe, *roles_path], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert role_of(elsewhere) == str(site_packages(venv) / "glmops" / "_content" / "roles" / "glmops_wheel")
    assert role_of(tmp_path) == str(tmp_path / "roles" / "glmops_wheel")
    assert role_of(elsewhere, str(tmp_path / "roles")) == str(tmp_path / "roles" / "glmops_wheel")


def test_installed_wheel_runs_a_shipped_playbook_by_name(venv: Path, tmp_path: Path) -> None:
    """`glmops run example`: the playbook's template (templates/) and file (files/) come from the wheel."""
    deploy = tmp_path / "example"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {"localhost": {"ansible_connection": "local"}}}}}}))
    run = installed(venv, "run", "example.yml", "-i", str(inventory), "-e", f"deploy_dir={deploy}", "--json", cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    shipped = site_packages(venv) / "glmops" / "_content" / "playbooks"
    assert (deploy / "client_example.py").read_bytes() == (shipped / "files" / "client_example.py").read_bytes()
    config = (deploy / "api_server.yaml").read_text()
    assert "6006" in config and "{{" not in config


@pytest.fixture(scope="module")
def wheel_deploy(venv: Path, tiny_models: dict[str, Path], sshd: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`glmops run local` from the installed wheel to the test sshd; the server is killed at the end."""
    root = tmp_path_factory.mktemp("wheel-deploy")
    deploy_dir = root / "target"
    # The target's venv already holds torch and the server's packages (the test venv's, by a .pth), as
    # AutoDL's conda does: python_env keeps them and installs only glmops's wheel.
    subprocess.run([sys.executable, "-m", "venv", str(deploy_dir / "venv")], check=True, capture_output=True, timeout=300)
    (site_packages(deploy_dir / "venv") / "test_venv_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    port = free_port()
    host = {**sshd.hostvars(), "deploy_dir": str(deploy_dir), "api_port": port, "model_source": "upload",
            "model_upload_from": str(tiny_models["chat"]), "embedding_model": "none"}
    common = {"profile": "cpu", "transformers_pin": "transformers==4.57.6", "model_id": "tiny-chatglm3",
              "client_env_file": str(root / "client.env"), "server_health_timeout": 600}
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"local": {"vars": common, "hosts": {"target": host}}}}}))
    cwd = root / "elsewhere"
    cwd.mkdir()
    run = installed(venv, "run", "local", "-i", str(inventory), "--json", "-e", f"glmops_wheel_cache={root / 'wheels'}", cwd=cwd, timeout=800)
    yield {"run": run, "root": root, "deploy_dir": deploy_dir, "port": port}
    try:
        os.killpg(int((deploy_dir / "run" / "server.pid").read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def test_installed_wheel_deploys_the_tiny_models(wheel_deploy: Any, venv: Path) -> None:
    run = wheel_deploy["run"]
    failures = [f"{e['host']} {e['task']}: {e.get('msg')}" for e in events(run.stdout)
                if e["event"] == "host_result" and e["status"] in ("failed", "unreachable")]
    assert run.returncode == 0, "\n".join(failures) + run.stderr[-3000:]
    assert recap(run.stdout)["target"]["failed"] == 0
    # the controller had no source tree: the wheel was packed from the installed glmops, content included
    build = results(run.stdout, "Build the glmops wheel (skipped when this source tree was built before)")["localhost"]
    assert build["status"] == "changed"
    (wheel,) = (wheel_deploy["root"] / "wheels").glob("*/glmops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "glmops/_content/roles/api_server/tasks/main.yml" in names and "glmops-0.1.0.dist-info/entry_points.txt" in names
    # ... and it is what the target's venv runs the server from
    target_site = site_packages(wheel_deploy["deploy_dir"] / "venv")
    assert (target_site / "glmops" / "_content" / "playbooks" / "local.yml").is_file()
    assert (target_site / "glmops" / "server").is_dir()
    # healthy, and one real chat answer (the role's own check, then ours through the official client)
    answers = results(run.stdout, "The answer")
    assert answers["target"]["status"] == "ok" and "answers:" in answers["target"]["msg"]
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{wheel_deploy['port']}/v1", api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}], max_tokens=8)
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0


def test_wheel_of_the_installed_package_is_cached_and_reproducible(venv: Path, tmp_path: Path) -> None:
    """roles/glmops_wheel without a source tree: the same installed glmops gives the same bytes (so a re-run
    uploads nothing), built once per cache."""
    content = site_packages(venv) / "glmops" / "_content"
    builder = content / "roles" / "glmops_wheel" / "files" / "build_wheel.py"

    def build(cache: Path) -> list[str]:
        done = subprocess.run([sys.executable, str(builder), str(content), str(cache)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    first, again, elsewhere = build(tmp_path / "a"), build(tmp_path / "a"), build(tmp_path / "b")
    assert first[2] == "BUILT" and again == [first[0], first[1], "CACHED"]
    assert elsewhere[1] == first[1] and elsewhere[2] == "BUILT"
    not_glmops = subprocess.run([sys.executable, str(builder), str(tmp_path), str(tmp_path / "c")], capture_output=True, text=True, timeout=60)
    assert not_glmops.returncode == 2 and "glmops_source_dir" in not_glmops.stderr
