"""`glmops up LOGIN|HOST`: from the login line AutoDL shows to a streamed chat answer, in one command;
`glmops down HOST`: close its tunnel and stop its server.

up: log in (the password once when no key works, then the key is installed: connection/copyid.py),
look at the host (the facts of `glmops facts` and the probe of `glmops doctor`), record it in the
user's inventory (commands/inventory.py's add_host), print a PLAN and ask, deploy with the matching
shipped playbook (in-process, as `glmops run`), open `glmops tunnel --background`, stream one answer
(commands/chat.py). Everything it learns is in the host's inventory entry, so the day-2 commands and
a re-run (`glmops up HOST`: changed=0, seconds) need nothing more.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from glmops.commands._hosts import Target, connected, load_targets, run_command
from glmops.userconfig import config_dir, user_inventory
from glmops.errors import EXIT_ERROR, EXIT_HOST_FAILED, ArgumentError, AuthenticationFailure, GlmopsError

CONTEXT = {"help_option_names": ["-h", "--help"]}
LOGIN_EXAMPLE = '"ssh -p 12345 root@region-9.autodl.com"'
PLAYBOOKS = ("autodl", "cpu", "mac", "multigpu", "local")
# Sizes on disk of the models glmops knows (GB, 10^9 bytes), by the last part of the model id.
KNOWN_SIZES_GB = {"chatglm3-6b": 12.5, "chatglm3-6b-32k": 12.5, "chatglm3-6b-base": 12.5,
                  "bge-large-zh-v1.5": 1.3, "bge-large-zh": 1.3}
VENV_GB = {"reuse": 1.0, "cpu": 1.5, "cuda": 5.0}  # a new venv: transformers etc. (reuse), + CPU torch, + CUDA torch
CONVERTED_GB = 3.5  # chatglm_cpp / llama_cpp: the q4_0 file made on the host
MARGIN_GB = 1.0  # logs, pip's temporary files
DOWNLOAD_MBS, UPLOAD_MBS = 20.0, 5.0  # the speeds the time estimate assumes (MB/s)
# Keys of the shipped example inventories (inventory/KIND.yml) that describe the machine, not the user.
KIND_KEYS = {"autodl": ("python_env_python", "python_env_reuse"), "cpu": ("torch_pip_args",)}
SOURCES = ("modelscope", "huggingface", "git", "upload")
PURGE_MARKS = ("api_server.yaml", "run/server.cmd", "dist/requirements.txt")  # files only a glmops deploy folder holds


# -- the user's files -----------------------------------------------------------------------
def _private_file(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600, folder 0700 when new): temporary file, then rename."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def own_key() -> str:
    """The private key file glmops installs when the user has none: <config>/id_ed25519, made once."""
    private = config_dir() / "id_ed25519"
    if not private.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _private_file(private, pem.decode())
        Path(str(private) + ".pub").write_text(public.decode() + " glmops\n")
        click.echo(f"made an SSH key for glmops: {private}")
    return str(private)


# -- which host ------------------------------------------------------------------------------
@dataclass
class Host:
    """The host `up` works on: its inventory name, what the login line said, what the inventory holds."""

    name: str
    entry: dict[str, Any]  # connection variables from the login line (empty for a known host)
    remove: tuple[str, ...] = ()
    known: dict[str, Any] = field(default_factory=dict)  # the host's inventory variables so far
    groups: list[str] = field(default_factory=list)  # its groups there (a playbook's group: the playbook it was deployed with)
    ignored: list[str] = field(default_factory=list)


def derive_name(host: str, port: int | None) -> str:
    """An inventory name from the login line: autodl-PORT for AutoDL, else the host (and the port)."""
    if host.endswith(".autodl.com") or host.endswith(".autodl.pro"):
        return f"autodl-{port or 22}"
    base = re.sub(r"[^A-Za-z0-9_-]", "-", host.split(".")[0] if not host.replace(".", "").isdigit() else host)
    return base + (f"-{port}" if port and port != 22 else "")


def _inventory_hosts(path: Path) -> Any:
    from glmops.inventory import load_inventory

    return load_inventory([str(path)]) if path.exists() else None


def resolve_host(words: tuple[str, ...], name: str | None, inventory_path: Path) -> Host:
    """A login line (one quoted argument, or the words after --) or the name of a host in the inventory."""
    from glmops.commands.inventory import _NAME, parse_login

    inventory = _inventory_hosts(inventory_path)
    hosts = inventory.hosts if inventory else {}
    text = " ".join(words).strip()
    if len(words) == 1 and text in hosts:
        if name not in (None, text):
            raise ArgumentError(f"{text!r} is a host in {inventory_path} already; --name {name} cannot rename it", field="--name",
                                hint="leave --name off, or give the login line to record the host under a new name")
        return Host(text, {}, known=inventory.host_vars(text), groups=inventory.group_names(text))
    if len(words) == 1 and " " not in text and "@" not in text:
        known = ", ".join(sorted(hosts)[:10]) or "none"
        raise ArgumentError(f"{text!r} is neither a login line nor a host in {inventory_path} (hosts there: {known})",
                            field="LOGIN", hint=f"paste the login line the provider shows, in quotes: glmops up {LOGIN_EXAMPLE}")
    try:
        login = parse_login(list(words))
    except GlmopsError as exc:
        raise ArgumentError(f"not a login line: {exc.message}", field="LOGIN",
                            hint=f"expected `ssh -p PORT user@host`, in quotes: glmops up {LOGIN_EXAMPLE}") from None
    entry: dict[str, Any] = {"ansible_host": login.host}
    remove = []
    for var, value in (("ansible_port", login.port), ("ansible_user", login.user)):
        if value is None:
            remove.append(var)
        else:
            entry[var] = value
    if login.key:
        entry["ansible_ssh_private_key_file"] = os.path.abspath(os.path.expanduser(login.key))
    if name is None:  # the host may be there already under another name
        name = next((h for h in hosts if _same_place(inventory.host_vars(h), entry)), None) or derive_name(login.host, login.port)
    if not _NAME.match(name) or name in ("all", "ungrouped"):
        raise ArgumentError(f"invalid host name {name!r}", field="--name", hint="letters, digits, '-', '_' or '.', e.g. autodl-3090")
    known, groups = (inventory.host_vars(name), inventory.group_names(name)) if name in hosts else ({}, [])
    return Host(name, entry, tuple(remove), known, groups, login.ignored)


def _same_place(variables: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(str(variables.get(k, "")) == str(entry.get(k, "")) for k in ("ansible_host", "ansible_port", "ansible_user"))


# -- logging in ------------------------------------------------------------------------------
def log_in(host: Host, variables: dict[str, Any]) -> dict[str, Any]:
    """Connect with the keys there are; when the host refuses them, ask the password once and install a key
    (the key glmops made when the user has none). Returns the connection variables that work."""
    from glmops.commands.prompts import read_secret
    from glmops.connection.copyid import DEFAULT_PUBLIC_KEYS, copy_id
    from glmops.connection.factory import open_connection

    candidates = [variables]
    mine = config_dir() / "id_ed25519"
    if not variables.get("ansible_ssh_private_key_file") and mine.exists():  # the key glmops made for an earlier host
        candidates.append({**variables, "ansible_ssh_private_key_file": str(mine)})
    for candidate in candidates:
        try:
            with open_connection(host.name, candidate, host_key_checking="accept-new"):
                if candidate is not variables:
                    host.entry["ansible_ssh_private_key_file"] = str(mine)
                return candidate
        except AuthenticationFailure:
            continue
    key = variables.get("ansible_ssh_private_key_file")
    if not key:
        key = next((p[:-4] for p in map(os.path.expanduser, DEFAULT_PUBLIC_KEYS) if os.path.isfile(p) and os.path.isfile(p[:-4])), None)
    key = str(key or own_key())
    where = f"{variables.get('ansible_user', '')}@{variables.get('ansible_host', host.name)}".lstrip("@")
    password = read_secret(f"SSH password for {where} (asked once: a key is installed)", "password")
    status = copy_id(host.name, variables, password, os.path.expanduser(key) + ".pub", host_key_checking="accept-new")
    click.echo(f"{key}.pub {'installed on' if status == 'added' else 'was already on'} {host.name}: no password from now on")
    if not any(os.path.expanduser(p) == os.path.expanduser(key) + ".pub" for p in DEFAULT_PUBLIC_KEYS):
        host.entry["ansible_ssh_private_key_file"] = key
    return {**variables, "ansible_ssh_private_key_file": key}


# -- looking at the host ---------------------------------------------------------------------
PROBE = ('echo @@up; [ -d {data} ] && echo autodl_data; echo "home=$HOME"; echo "uid=$(id -u)"; '
         '[ -x {conda} ] && echo conda; echo @@up-end')


def probe_host(conn: Any, data_dir: str, conda: str) -> dict[str, Any]:
    """What the kind needs beyond the facts: AutoDL's data disk, the home folder, root or not, conda."""
    out = conn.run(PROBE.format(data=shlex.quote(data_dir), conda=shlex.quote(conda)), timeout=60).stdout
    lines = out.partition("@@up\n")[2].partition("@@up-end")[0].splitlines()
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    return {"autodl_data": "autodl_data" in lines, "conda": "conda" in lines, "home": values.get("home") or "/root",
            "root": values.get("uid") == "0"}


def kind_of(facts: dict[str, Any], probe: dict[str, Any]) -> tuple[str, str]:
    """(playbook, why) from the facts: mac, autodl, multigpu (NVIDIA GPUs), else cpu."""
    gpus = facts.get("glmops_gpus") or []
    if facts.get("glmops_system") == "Darwin":
        return "mac", "macOS" + (" on Apple Silicon" if facts.get("glmops_apple_silicon") else "")
    if facts.get("glmops_autodl") or probe.get("autodl_data"):
        why = " and ".join(w for w, ok in (("/etc/network_turbo", facts.get("glmops_autodl")), ("the data disk", probe.get("autodl_data"))) if ok)
        return "autodl", f"AutoDL container ({why})"
    if gpus:
        return "multigpu", f"{len(gpus)} NVIDIA GPU(s)"
    return "cpu", "no NVIDIA GPU"


def shipped_vars(playbook: str) -> dict[str, Any]:
    """The machine-specific variables of the shipped example inventory of `playbook` (KIND_KEYS)."""
    from glmops.inventory import load_inventory
    from glmops.shipped import content_root

    path = content_root() / "inventory" / f"{playbook}.yml"
    keys = KIND_KEYS.get(playbook, ())
    if not keys or not path.exists():
        return {}
    inventory = load_inventory([str(path)])
    members = inventory.select(playbook)
    found = inventory.host_vars(members[0]) if members else {}
    return {k: found[k] for k in keys if k in found}


def kind_defaults(playbook: str, probe: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """Variables a new host of this kind gets: where the deploy goes, the python it reuses."""
    found = shipped_vars(playbook)
    if playbook == "autodl":
        if not probe.get("conda"):
            found = {k: v for k, v in found.items() if not k.startswith("python_env_")}
        return {"deploy_dir": posixpath.join(data_dir, "glmops"), **found}
    if not probe.get("root"):  # a user without root writes in its home, not /opt
        found["deploy_dir"] = posixpath.join(probe["home"], "glmops")
    return found


# -- the plan --------------------------------------------------------------------------------
def folder_gb(path: str) -> float:
    """The size of a local folder (what an upload sends), GB."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".git"]
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if os.path.isfile(os.path.join(root, f)))
    return total / 1e9


@dataclass
class Item:
    """One thing the deploy puts on the host."""

    what: str
    gb: float | None  # None: unknown size
    source: str
    upload: bool = False
    there: bool = False  # already on the host: nothing to move


def _there(info: Any) -> bool:
    return bool(info and info.get("exists") and info.get("weights") and not info.get("pointers"))


def plan_items(variables: dict[str, Any], probe: dict[str, Any] | None, profile: str, venv_there: bool) -> list[Item]:
    """The models and packages the deploy would move, with their sizes and where from."""
    probe = probe or {}
    items = []
    source = str(variables.get("model_source") or "modelscope")
    model_id = str(variables.get("model_id") or "ZhipuAI/chatglm3-6b")
    for kind, name, src, upload_from, info in (
        ("chat model", model_id.rsplit("/", 1)[-1], source, variables.get("model_upload_from"), probe.get("model")),
        ("embedding model", str(variables.get("embedding_model") or "bge-large-zh-v1.5"),
         str(variables.get("embedding_model_source") or source), variables.get("embedding_model_upload_from"), probe.get("embedding")),
    ):
        if kind == "embedding model" and name.lower() == "none":
            continue
        if src == "upload":
            path = os.path.expanduser(str(upload_from or ""))
            if not path or not os.path.isdir(path):
                raise ArgumentError(f"the {kind} is uploaded from {path or '(nothing)'}, which is not a folder here",
                                    field="--model-from" if kind == "chat model" else "embedding_model_upload_from",
                                    hint="name the folder holding the model's config.json and weights")
            items.append(Item(f"{kind} {name}", folder_gb(path), f"this machine: {path}", upload=True, there=_there(info)))
            continue
        where = {"modelscope": "ModelScope", "huggingface": str(variables.get("model_endpoint") or "Hugging Face"),
                 "git": str(variables.get(("model" if kind == "chat model" else "embedding_model") + "_repo_url") or "git")}.get(src, src)
        items.append(Item(f"{kind} {name}", KNOWN_SIZES_GB.get(name.lower()), where, there=_there(info)))
    reuse = str(variables.get("python_env_reuse", "")).lower() in ("true", "yes", "1")
    venv = "reuse" if reuse else "cuda" if profile in ("fp16", "int8", "int4", "vllm") else "cpu"
    items.append(Item("Python packages (torch, transformers, glmops)", VENV_GB[venv], "PyPI (pip)", there=venv_there))
    if profile in ("chatglm_cpp", "llama_cpp"):
        items.append(Item(f"{profile} q4_0 file (converted on the host, the engine built there)", CONVERTED_GB, "made on the host"))
    return items


def estimate_minutes(items: list[Item], profile: str) -> float:
    """A rough time for the deploy: transfers at DOWNLOAD_MBS / UPLOAD_MBS, pip, the model load, engine builds."""
    seconds = 0.0
    for item in items:
        if item.there or not item.gb:
            continue
        if item.source == "PyPI (pip)":
            seconds += 180
        elif item.source != "made on the host":
            seconds += item.gb * 1000 / (UPLOAD_MBS if item.upload else DOWNLOAD_MBS)
    seconds += 480 if profile in ("chatglm_cpp", "llama_cpp") and not all(i.there for i in items) else 0
    return (seconds + 60) / 60  # + loading the model


def _gb_text(gb: float | None) -> str:
    return "size unknown" if gb is None else f"{gb:.1f} GB" if gb >= 0.1 else f"{gb * 1000:.1f} MB"


def check_disk(items: list[Item], free_mb: Any, where: str) -> tuple[float, float]:
    """(GB needed, GB free) at the deploy folder; raises when it does not fit (before anything is moved)."""
    need = sum(i.gb or 0 for i in items if not i.there) + (MARGIN_GB if not all(i.there for i in items) else 0)
    free = float(free_mb or 0) / 1024 * 1.073741824  # MiB -> GB
    if free_mb is not None and need > free:
        listed = ", ".join(f"{i.what} {_gb_text(i.gb)}" for i in items if not i.there)
        raise GlmopsError(f"not enough disk at {where}: the deploy needs {need:.1f} GB ({listed}, {MARGIN_GB:.0f} GB room), "
                          f"{free:.1f} GB is free; nothing was downloaded or changed", field="disk",
                          hint="free space on the host, or put the deploy on a bigger disk: -e deploy_dir=/path/on/it "
                               "(AutoDL: the data disk /root/autodl-tmp)")
    return need, free


# -- the command -----------------------------------------------------------------------------
@click.command(context_settings=CONTEXT)
@click.argument("login", nargs=-1, required=True, metavar='"ssh -p PORT user@host" | HOST')
@click.option("--name", help="The host's name in the inventory (default: from the host, e.g. autodl-12345).")
@click.option("-i", "--inventory", "inventory_path", type=click.Path(dir_okay=False),
              help="The inventory to record the host in (default: ~/.config/glmops/inventory.yml).")
@click.option("-e", "--extra-vars", multiple=True, help="Variables, as in `glmops run` (NAME=VALUE, @file.yml, JSON); recorded for the host.")
@click.option("--model-source", type=click.Choice(SOURCES), help="Where the chat model comes from (default modelscope).")
@click.option("--model-from", type=click.Path(exists=True, file_okay=False), help="Upload the chat model from this folder.")
@click.option("--profile", help="fp16, int8, int4, cpu, chatglm_cpp, llama_cpp, vllm, mps (default: auto, from the host's GPU and RAM).")
@click.option("--api-key", help="The key clients must send (default: one made and kept in ~/.config/glmops/HOST.key).")
@click.option("--local-port", type=click.IntRange(1, 65535), help="The tunnel's port here (default 6006, else a free one).")
@click.option("--playbook", help="Deploy with this playbook (autodl, cpu, mac, multigpu, local or a path) instead of the one the host's kind picks.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deploying (needed when stdin is not a terminal).")
def up(login: tuple[str, ...], name: str | None, inventory_path: str | None, extra_vars: tuple[str, ...], model_source: str | None,
       model_from: str | None, profile: str | None, api_key: str | None, local_port: int | None, playbook: str | None, yes: bool) -> None:
    """From a login line (or a host in the inventory) to a chat answer: log in (asking the password once,
    then installing a key), look at the host, show the PLAN, deploy, open the tunnel, stream an answer.

    \b
      glmops up "ssh -p 12345 root@region-9.autodl.com"
      glmops up autodl-12345            # again: nothing to do, seconds
      glmops down autodl-12345
    """
    options = {"name": name, "extra_vars": extra_vars, "model_source": model_source, "model_from": model_from, "profile": profile,
               "api_key": api_key, "local_port": local_port, "playbook": playbook, "yes": yes}
    run_command(lambda: _up(login, Path(inventory_path) if inventory_path else user_inventory(), options))


@dataclass
class Look:
    """What up learned on the host: the playbook and why, the facts and doctor's probe, the settings to record."""

    playbook: str
    why: str
    data: dict[str, Any]  # doctor's parse_gather(): facts, venv, probe (model folders), running
    settings: dict[str, Any]
    variables: dict[str, Any]  # the host's variables for this deploy (inventory, settings, -e)
    layout: Any


def look_at(host: Host, connection_vars: dict[str, Any], extra: dict[str, Any], opts: dict[str, Any]) -> Look:
    """Two round trips: the kind (facts + AutoDL's data disk, home, conda), then doctor's probe at the deploy folder."""
    from glmops.connection.factory import open_connection
    from glmops.doctor import gather_script_for, parse_gather
    from glmops.layout import Layout
    from glmops.modules.gpu_facts import gather_script, parse_facts

    data_dir = str(connection_vars.get("autodl_data_dir") or "/root/autodl-tmp")
    turbo = str(connection_vars.get("network_turbo_file") or connection_vars.get("network_turbo_path") or "/etc/network_turbo")
    with open_connection(host.name, connection_vars, host_key_checking="accept-new") as conn:
        probe = probe_host(conn, data_dir, "/root/miniconda3/bin/python")
        playbook, why = kind_of(parse_facts(conn.run(gather_script("/", turbo), timeout=120).stdout), probe)
        recorded = next((g for g in host.groups if g in PLAYBOOKS), None)  # the playbook of the last `up`
        playbook = opts["playbook"] or recorded or playbook
        settings = _settings(host, playbook, probe, data_dir, extra, opts)
        variables = {**connection_vars, **settings, **extra}
        layout = Layout.from_hostvars(variables)
        models = posixpath.join(layout.deploy_dir, "models")
        hints = {"model_path": posixpath.join(models, str(variables.get("model_id") or "chatglm3-6b").rsplit("/", 1)[-1]),
                 "embedding_model_path": posixpath.join(models, str(variables.get("embedding_model") or "bge-large-zh-v1.5")),
                 "network_turbo_path": turbo}
        data = parse_gather(conn.run(gather_script_for(layout, {**variables, **hints}), timeout=120).stdout)
    return Look(playbook, why, data, settings, variables, layout)


def _check_options(opts: dict[str, Any]) -> None:
    """What can be refused before logging in: the profile's name, the playbook."""
    from glmops.profile import PROFILES
    from glmops.shipped import resolve_playbook

    if opts["profile"] and opts["profile"] not in PROFILES:
        raise ArgumentError(f"unknown profile {opts['profile']!r}", field="--profile", hint="one of: " + ", ".join(PROFILES))
    if opts["playbook"] and not resolve_playbook(opts["playbook"]).is_file():
        raise ArgumentError(f"no playbook {opts['playbook']!r}", field="--playbook",
                            hint="one of the shipped " + ", ".join(PLAYBOOKS) + ", or the path of a playbook file")


def _up(words: tuple[str, ...], inventory_path: Path, opts: dict[str, Any]) -> int:
    from glmops.commands.inventory import add_host
    from glmops.commands.run import parse_extra_vars
    from glmops.profile import ProfileError, decide

    started = time.monotonic()
    _check_options(opts)
    host = resolve_host(words, opts["name"], inventory_path)
    for option in host.ignored:
        click.echo(f"note: ignored ssh option {option} (glmops connects with its own SSH client)", err=True)
    extra = parse_extra_vars(opts["extra_vars"])
    connection_vars = {k: v for k, v in {**host.known, **host.entry, **extra}.items() if k not in host.remove}
    connection_vars = log_in(host, connection_vars)
    look = look_at(host, connection_vars, extra, opts)
    facts = look.data["facts"]
    try:
        choice = decide(facts, opts["profile"] or str(look.variables.get("profile") or "auto"))
    except ProfileError as exc:
        raise GlmopsError(f"{host.name}: {exc.message}", field="--profile", hint=exc.hint) from None
    items = plan_items(look.variables, look.data.get("probe"), choice.profile, bool(look.data.get("venv")))
    # record the host before the plan: `glmops up NAME` finds it again, even when the plan is declined
    group = look.playbook if look.playbook in PLAYBOOKS else None
    status, _ = add_host(str(inventory_path), host.name, group, {**host.entry, **look.settings}, host.remove)
    if status != "unchanged":
        click.echo(f"{status} {host.name} in {inventory_path}")
    key = _api_key(host.name, opts["api_key"])
    need, free = check_disk(items, facts.get("glmops_disk_free_mb"), facts.get("glmops_disk_path") or look.layout.deploy_dir)
    _print_plan(host, connection_vars, look, choice, items, need, free)
    _confirm(opts["yes"], "Proceed?", default=True)
    code, changed = _deploy(look.playbook, inventory_path, host.name, extra, key)
    if code != 0:
        click.secho(f"the deploy failed (exit {code}); see above, and `glmops doctor {host.name} -i {inventory_path}`", fg="red", err=True)
        return code
    local_port = int(look.variables["tunnel_local_port"])
    code = _tunnel(host.name, inventory_path, local_port, look.layout.api_port)
    if code == 0:
        _answer(local_port, key)
        _print_next(host.name, inventory_path, look, changed, time.monotonic() - started)
    return code


def _print_next(name: str, inventory_path: Path, look: Look, changed: int, took: float) -> None:
    """What to do next: the API, the clients' .env, the day-2 commands."""
    layout, local_port = look.layout, look.variables["tunnel_local_port"]
    inv = "" if inventory_path == user_inventory() else f" -i {inventory_path}"
    click.echo(f"\n{name} is up ({'nothing changed, ' if changed == 0 else ''}{took:.0f} s).")
    click.echo(f"  API       http://127.0.0.1:{local_port}/v1  (the tunnel to {layout.api_host}:{layout.api_port} on {name})")
    click.echo(f"  clients   {look.variables.get('client_env_file')} (OPENAI_BASE_URL, OPENAI_API_KEY, ZHIPU_*); "
               f"the key is in {config_dir() / (name + '.key')}")
    click.echo(f"  status    glmops status {name} -i {inventory_path}")
    click.echo(f"  ask       glmops chat {name} \"你好\" --stream -i {inventory_path}")
    click.echo(f"  again     glmops up {name}{inv}   (changed=0 in seconds)")
    click.echo(f"  stop      glmops down {name}{inv}   (the tunnel and the server; --purge also removes {layout.deploy_dir})")


def _settings(host: Host, playbook: str, probe: dict[str, Any], data_dir: str, extra: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """What up records for the host: the kind's defaults where the inventory is silent, then the options and -e."""
    settings = {k: v for k, v in kind_defaults(playbook, probe, data_dir).items() if k not in host.known}
    if opts["model_from"]:
        path = os.path.abspath(os.path.expanduser(opts["model_from"]))
        settings.update(model_source="upload", model_upload_from=path)
        if "model_id" not in extra:  # the folder on the host is named after it
            settings["model_id"] = os.path.basename(path.rstrip("/"))
        if "embedding_model_source" not in host.known:
            settings["embedding_model_source"] = "modelscope"  # the embeddings are not uploaded with --model-from
    elif opts["model_source"]:
        settings["model_source"] = opts["model_source"]
    if opts["profile"]:
        settings["profile"] = opts["profile"]
    key_file = config_dir() / f"{host.name}.key"
    if "api_keys" not in host.known or opts["api_key"]:
        settings["api_keys"] = [f"{{{{ lookup('file', {str(key_file)!r}) }}}}"]
    if "client_env_file" not in host.known:
        settings["client_env_file"] = str(config_dir() / f"{host.name}.env")
    settings["tunnel_local_port"] = opts["local_port"] or host.known.get("tunnel_local_port") or _free_local_port(host.name)
    settings.update(extra)  # -e is recorded: the day-2 commands and `glmops up HOST` see the same deployment
    return settings


def _free_local_port(name: str) -> int:
    """6006 when it is free here (or our tunnel to this host holds it), else a free port."""
    import socket

    from glmops.commands.tunnel import DEFAULT_PORT, read_states

    if any(s.get("host") == name and s.get("local_port") == DEFAULT_PORT for s in read_states()):
        return DEFAULT_PORT
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections (TIME_WAIT) do not hold it
        try:
            sock.bind(("127.0.0.1", DEFAULT_PORT))
            return DEFAULT_PORT
        except OSError:
            pass
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    click.echo(f"note: port {DEFAULT_PORT} is taken here; the tunnel will use {port}")
    return port


def _api_key(name: str, given: str | None) -> str:
    """The API key: --api-key, else the one kept in <config>/NAME.key, else a new one (written there, 0600)."""
    path = config_dir() / f"{name}.key"
    current = path.read_text().strip() if path.exists() else None
    key = given or current or "sk-" + secrets.token_urlsafe(24)
    if key != current:
        _private_file(path, key + "\n")
    return key


def _print_plan(host: Host, conn_vars: dict[str, Any], look: Look, choice: Any, items: list[Item], need: float, free: float) -> None:
    from glmops.commands.day2 import _fact_text

    facts, layout = look.data["facts"], look.layout
    where = f"{conn_vars.get('ansible_user', '')}@{conn_vars.get('ansible_host', host.name)}".lstrip("@")
    port = conn_vars.get("ansible_port")
    ram = f"{_fact_text('glmops_ram_mb', facts.get('glmops_ram_mb'), facts)} ({_fact_text('glmops_ram_available_mb', facts.get('glmops_ram_available_mb'), facts)} available)"
    rows = [
        ("host", f"{host.name} ({where}{f':{port}' if port else ''}): {look.why}, {facts.get('glmops_system')} {facts.get('glmops_architecture')}"),
        ("playbook", look.playbook),
        ("GPU", _fact_text("glmops_gpus", facts.get("glmops_gpus"), facts)),
        ("RAM", ram),
        ("profile", choice.reason),
    ]
    for index, item in enumerate(items):
        state = "already there" if item.there else f"{_gb_text(item.gb)} from {item.source}"
        rows.append(("moves" if index == 0 else "", f"{item.what}: {state}"))
    quick = all(i.there for i in items) and look.data.get("running")
    rows += [
        ("goes to", f"{layout.deploy_dir} on {host.name}"),
        ("disk", f"{free:.1f} GB free at {facts.get('glmops_disk_path')}; needs {need:.1f} GB; {free - need:.1f} GB free after"),
        ("time", "seconds (everything is there)" if quick else
         f"about {estimate_minutes(items, choice.profile):.0f} min (downloads at ~{DOWNLOAD_MBS:.0f} MB/s, uploads at ~{UPLOAD_MBS:.0f} MB/s)"),
        ("API", f"{layout.api_host}:{layout.api_port} on {host.name}; here http://127.0.0.1:{look.variables['tunnel_local_port']}/v1 "
                f"(tunnel), key in {config_dir() / (host.name + '.key')}"),
    ]
    click.echo("\nPLAN")
    for label, text in rows:
        click.echo(f"  {label:<9} {text}")


def _confirm(yes: bool, question: str, *, default: bool) -> None:
    """Ask on a terminal; without one, refuse unless -y."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise GlmopsError(f"{question} needs an answer, and stdin is not a terminal; nothing was changed",
                          hint="run it in a terminal, or add -y to proceed without asking")
    if not click.confirm(question, default=default):
        raise GlmopsError("stopped at your answer; nothing was changed")


def _deploy(playbook: str, inventory_path: Path, name: str, extra: dict[str, Any], key: str) -> tuple[int, int]:
    """Run the playbook on the host in this process, as `glmops run` does: (exit code, tasks changed on the host)."""
    from glmops.commands.run import _interrupt_handler
    from glmops.executor.runner import PlaybookRunner, RunOptions
    from glmops.inventory import load_inventory
    from glmops.output.console import ConsoleRenderer
    from glmops.playbook.loader import load_playbook
    from glmops.shipped import resolve_playbook

    book = load_playbook(str(resolve_playbook(playbook)))
    options = RunOptions(extra_vars={**extra, "target": name}, host_key_checking="accept-new")
    renderer = ConsoleRenderer()
    recap: dict[str, Any] = {}

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "recap":
            recap.update(event["stats"].get(name) or {})
        renderer(event)

    runner = PlaybookRunner(book, load_inventory([str(inventory_path)]), options, emit)
    runner.redactor.add(key)
    with _interrupt_handler(runner, False):
        code = runner.run()
    return code, int(recap.get("changed", -1))


def _tunnel(name: str, inventory_path: Path, local_port: int, api_port: int) -> int:
    """`glmops tunnel open NAME --background` (an open one is reused)."""
    from glmops.commands.tunnel import _start_background

    return _start_background(name, (str(inventory_path),), local_port, api_port, "127.0.0.1", "127.0.0.1", True, 15.0, None)


def _answer(local_port: int, key: str) -> None:
    """One chat answer through the tunnel, printed as it streams."""
    from glmops.commands.chat import build_request, send, url_endpoint

    prompt = "你好，请用一句话介绍你自己。"
    click.echo(f"\n> {prompt}")
    request = build_request(prompt, system=None, max_tokens=64, stream=True, model=None, temperature=None)

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    send(url_endpoint(f"http://127.0.0.1:{local_port}/v1", hint=f"the tunnel on 127.0.0.1:{local_port}"), request, key, show, timeout=120)
    sys.stdout.write("\n")


# -- down ------------------------------------------------------------------------------------
@click.command(context_settings=CONTEXT)
@click.argument("host")
@click.option("-i", "--inventory", "inventory_path", type=click.Path(dir_okay=False),
              help="The inventory the host is in (default: ~/.config/glmops/inventory.yml).")
@click.option("--purge", is_flag=True, help="Also remove the deploy folder on the host (venv, models, logs) after a confirmation.")
@click.option("-y", "--yes", is_flag=True, help="With --purge: do not ask.")
def down(host: str, inventory_path: str | None, purge: bool, yes: bool) -> None:
    """Close the tunnel to HOST and stop its API server (--purge: also remove its deploy folder)."""
    run_command(lambda: _down(host, str(inventory_path or user_inventory()), purge, yes))


def _down(name: str, inventory_path: str, purge: bool, yes: bool) -> int:
    from glmops.commands.day2 import stop_server
    from glmops.commands.tunnel import stop_tunnels

    if not os.path.exists(inventory_path):
        raise GlmopsError(f"inventory {inventory_path} not found", field="-i", hint="give the inventory the host is in with -i")
    target = load_targets(name, (inventory_path,), single=True)[0]
    closed, unproven = stop_tunnels(target.name)
    if not closed and not unproven:
        click.echo(f"{target.name}: no tunnel open")
    code = stop_server(target, True, 30.0)
    if code == 0 and purge:
        code = _purge(target, yes)
    return code or (EXIT_ERROR if unproven else 0)


def _purge(target: Target, yes: bool) -> int:
    """Remove the deploy folder, when it is one (it holds glmops's own files), after a confirmation."""
    folder = target.layout.deploy_dir.rstrip("/")
    if folder.count("/") < 2 and not folder.startswith("/opt/"):
        raise GlmopsError(f"refusing to remove {folder!r}: too close to / to be only a deploy folder", field="deploy_dir")
    quoted = shlex.quote(folder)
    with connected(target, True) as conn:
        marks = " || ".join(f"[ -f {shlex.quote(f'{folder}/{name}')} ]" for name in PURGE_MARKS)
        look = conn.run(f"{{ {marks}; }} && du -sk -- {quoted} | cut -f1")
        if not look.stdout.strip().isdigit():
            click.echo(f"{target.name}: {folder} is not a deploy folder (none of {', '.join(PURGE_MARKS)}); nothing removed")
            return 0
        size = int(look.stdout.strip()) / 1e6
        _confirm(yes, f"Remove {folder} on {target.name} ({size:.1f} GB: venv, models, logs)?", default=False)
        done = conn.run(f"rm -rf -- {quoted}")
    if done.rc != 0:
        click.secho(f"{target.name}: removing {folder} failed: {done.stderr.strip()}", fg="red", err=True)
        return EXIT_HOST_FAILED
    click.echo(f"{target.name}: removed {folder} ({size:.1f} GB)")
    return 0
