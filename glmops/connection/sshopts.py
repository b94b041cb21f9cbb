"""A host's SSH settings, gathered as OpenSSH would: explicit inventory variables first, then the
options in `ansible_ssh_common_args` / `ansible_ssh_extra_args`, then `~/.ssh/config`, then defaults.

Nothing here connects; `resolve()` returns plain data (`SSHSettings`) that `ssh.py` uses, plus the
warnings for options glmops does not support (never dropped silently).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import GlmopsError

DEFAULT_KEEPALIVE_INTERVAL = 15.0
DEFAULT_KEEPALIVE_COUNT = 3
ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
# ssh(1) flags that take a value, and those that do not (any other letter is an error).
_VALUE_FLAGS = set("BbcDEeFIiJLlmOoPpQRSWw")
_PLAIN_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")
# -o options that change nothing for glmops's own client: ignored with a softer note.
_HARMLESS = {"controlmaster", "controlpersist", "controlpath", "loglevel", "batchmode", "sendenv", "hashknownhosts",
             "identitiesonly", "forwardagent", "compression", "requesttty", "connectionattempts", "addkeystoagent"}
_FALSE = {"no", "false", "off", "0"}
_TRUE = {"yes", "true", "on", "1"}


@dataclass
class JumpHost:
    """One hop of a ProxyJump chain: `[user@]host[:port]` plus what ~/.ssh/config says about it."""

    hostname: str
    port: int = 22
    user: str | None = None
    key_filenames: list[str] = field(default_factory=list)


@dataclass
class SSHSettings:
    """Everything SSHConnection needs to reach one host."""

    hostname: str
    port: int = 22
    user: str | None = None
    key_filenames: list[str] = field(default_factory=list)  # explicit first; missing ones from ssh config skipped
    explicit_key: str | None = None  # ansible_ssh_private_key_file / -i: must exist
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_checking: str = "yes"
    proxy_jump: list[JumpHost] = field(default_factory=list)
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT
    connect_timeout: float | None = None
    warnings: list[str] = field(default_factory=list)


def _fail(host: str, field_name: str, message: str, hint: str | None = None) -> GlmopsError:
    return GlmopsError(f"host {host}: {message}", field=field_name, hint=hint)


def _policy(value: Any, where: str, host: str) -> str:
    """yes | accept-new | no from a bool or any of the spellings ssh and Ansible accept."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).strip().lower()
    if text in _TRUE or text == "ask":
        return "yes"
    if text in _FALSE:
        return "no"
    if text == "accept-new":
        return "accept-new"
    raise _fail(host, where, f"invalid {where} value {value!r}", hint="use yes, accept-new or no (true/false also work)")


def _int(value: Any, where: str, host: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _fail(host, where, f"{value!r} is not a number", hint=f"a whole number from {low} to {high}") from None
    if not low <= number <= high:
        raise _fail(host, where, f"{number} is out of range", hint=f"a whole number from {low} to {high}")
    return number


def parse_jump(spec: str, where: str, host: str) -> list[tuple[str | None, str, int | None]]:
    """`[user@]host[:port][,...]` (or `ssh://user@host:port`) -> [(user, host, port)]; 'none' -> []."""
    hops: list[tuple[str | None, str, int | None]] = []
    if spec.strip().lower() == "none":
        return hops
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("ssh://"):
            part = part[len("ssh://") :].rstrip("/")
        user, _, rest = part.rpartition("@")
        port: int | None = None
        if rest.startswith("["):  # [v6]:port
            address, _, tail = rest[1:].partition("]")
            rest = address
            if tail.startswith(":"):
                port = _int(tail[1:], where, host, 1, 65535)
        elif rest.count(":") == 1:
            rest, _, port_text = rest.partition(":")
            port = _int(port_text, where, host, 1, 65535)
        if not rest or rest.startswith("-"):
            raise _fail(host, where, f"invalid jump host {part!r}", hint="write [user@]host[:port], several separated by commas")
        hops.append((user or None, rest, port))
    return hops


@dataclass
class _Args:
    """What the ssh command-line options in ansible_ssh_*_args say (first value wins, as in ssh)."""

    values: dict[str, str] = field(default_factory=dict)  # lower-cased ssh_config keyword -> value
    identity_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def set(self, key: str, value: str) -> None:
        self.values.setdefault(key, value)


_OPTION_KEYS = {"p": "port", "l": "user", "J": "proxyjump", "F": "configfile"}
SUPPORTED = {"hostname", "port", "user", "identityfile", "proxyjump", "userknownhostsfile", "stricthostkeychecking",
             "serveraliveinterval", "serveralivecountmax", "connecttimeout"}


def parse_ssh_args(text: str, where: str, host: str) -> _Args:
    """Read ssh(1) options (`-o K=V`, `-J`, `-i`, `-p`, `-l`, `-F`) from one args string, shell-split."""
    out = _Args()
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise _fail(host, where, f"cannot split {text!r}: {exc}", hint="quote values as in a shell command line") from None
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or len(word) < 2:
            raise _fail(host, where, f"unexpected word {word!r}: only ssh options are allowed here",
                        hint="e.g. -o UserKnownHostsFile=/path/known_hosts -J jumphost")
        flags = word[1:]
        while flags and flags[0] in _PLAIN_FLAGS:
            out.warnings.append(f"{where}: ssh option -{flags[0]} is not supported by glmops and is ignored")
            flags = flags[1:]
        if not flags:
            continue
        letter, value = flags[0], flags[1:]
        if letter not in _VALUE_FLAGS:
            raise _fail(host, where, f"unknown ssh option -{letter}", hint="see `man ssh`; glmops reads -o, -J, -i, -p, -l and -F")
        if not value:
            if index >= len(words):
                raise _fail(host, where, f"ssh option -{letter} needs a value")
            value = words[index]
            index += 1
        if letter == "o":
            key, sep, val = value.partition("=")
            if not sep:
                key, _, val = value.strip().partition(" ")
            key, val = key.strip().lower(), val.strip()
            if not key or not val:
                raise _fail(host, where, f"-o {value!r} is not KEY=VALUE", hint="e.g. -o StrictHostKeyChecking=accept-new")
            if key in SUPPORTED:
                if key == "identityfile":
                    out.identity_files.append(val)
                else:
                    out.set(key, val)
            elif key in _HARMLESS:
                out.warnings.append(f"{where}: ssh option {value!r} is ignored (not needed: glmops keeps one connection per host itself)")
            else:
                out.warnings.append(f"{where}: ssh option {value!r} is not supported by glmops and is ignored")
        elif letter == "i":
            out.identity_files.append(value)
        elif letter in _OPTION_KEYS:
            out.set(_OPTION_KEYS[letter], value)
        else:
            out.warnings.append(f"{where}: ssh option -{letter} {value} is not supported by glmops and is ignored")
    return out


def _merge_args(hostvars: Mapping[str, Any], host: str) -> _Args:
    merged = _Args()
    for var in ARGS_VARS:
        text = hostvars.get(var)
        if text in (None, ""):
            continue
        if not isinstance(text, str):
            raise _fail(host, var, f"must be a string of ssh options, got {type(text).__name__}", hint='e.g. "-o ServerAliveInterval=10"')
        parsed = parse_ssh_args(text, var, host)
        for key, value in parsed.values.items():
            merged.set(key, value)
        merged.identity_files += parsed.identity_files
        merged.warnings += parsed.warnings
    return merged


def ssh_config_path(hostvars: Mapping[str, Any], args_file: str | None = None) -> str:
    """-F in the args, host var glmops_ssh_config, env GLMOPS_SSH_CONFIG, else ~/.ssh/config."""
    path = args_file or hostvars.get("glmops_ssh_config") or os.environ.get("GLMOPS_SSH_CONFIG") or "~/.ssh/config"
    return os.path.expanduser(str(path))


def lookup_config(path: str, alias: str, host: str) -> dict[str, Any]:
    """The ~/.ssh/config settings for `alias` ({} when the file does not exist)."""
    if not os.path.exists(path):
        return {}
    import paramiko

    try:
        config = paramiko.SSHConfig.from_path(path)
        return dict(config.lookup(alias))
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(host, "ssh config", f"cannot read {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - paramiko raises several types for bad configs
        raise _fail(host, "ssh config", f"{path} is not a valid ssh config: {type(exc).__name__}: {exc}",
                    hint="check the file with `ssh -G HOST -F FILE`") from None


def config_aliases(path: str) -> set[str]:
    """The plain names (no wildcard, no negation) of the Host lines in ssh config `path` ({} when it is missing)."""
    if not os.path.exists(path):
        return set()
    import paramiko

    try:
        names = paramiko.SSHConfig.from_path(path).get_hostnames()
    except Exception:  # noqa: BLE001 - a broken file is reported when a host is resolved through it
        return set()
    return {n for n in names if not any(c in n for c in "*?!")}


def _config_warnings(config: Mapping[str, Any], path: str, alias: str) -> list[str]:
    warnings = []
    if config.get("proxycommand") and str(config["proxycommand"]).lower() != "none":
        warnings.append(f"{path}: ProxyCommand for {alias} is not supported by glmops and is ignored (use ProxyJump)")
    return warnings


def _env_policy() -> str | None:
    for name in ("GLMOPS_HOST_KEY_CHECKING", "ANSIBLE_HOST_KEY_CHECKING"):
        value = os.environ.get(name)
        if value:
            return _policy(value, name, "(environment)")
    return None


def _jump_hosts(spec: str, where: str, host: str, config_path: str) -> list[JumpHost]:
    hops = []
    for user, name, port in parse_jump(spec, where, host):
        config = lookup_config(config_path, name, host)
        hops.append(JumpHost(
            hostname=str(config.get("hostname") or name),
            port=port or _int(config.get("port", 22), f"{config_path}: Port", host, 1, 65535),
            user=user or config.get("user"),
            key_filenames=[os.path.expanduser(p) for p in config.get("identityfile", [])],
        ))
    return hops


def resolve(name: str, hostvars: Mapping[str, Any], *, host_key_checking: str | None = None) -> SSHSettings:
    """The SSH settings of inventory host `name`: explicit settings win, as ssh and Ansible do."""
    args = _merge_args(hostvars, name)
    alias = str(hostvars.get("ansible_host") or name)
    config_path = ssh_config_path(hostvars, args.values.get("configfile"))
    config = lookup_config(config_path, alias, name)
    warnings = list(args.warnings) + _config_warnings(config, config_path, alias)

    def pick(var: str | None, key: str) -> tuple[Any, str]:
        if var and hostvars.get(var) not in (None, ""):
            return hostvars[var], var
        if key in args.values:
            return args.values[key], "ansible_ssh_common_args"
        if key in config:
            return config[key], f"{config_path}: {key}"
        return None, ""

    hostname = hostvars.get("ansible_host") or args.values.get("hostname") or config.get("hostname") or alias
    port_value, port_where = pick("ansible_port", "port")
    port = _int(port_value, port_where or "ansible_port", name, 1, 65535) if port_value is not None else 22
    user, _ = pick("ansible_user", "user")

    explicit_key = hostvars.get("ansible_ssh_private_key_file") or (args.identity_files[0] if args.identity_files else None)
    keys = ([str(explicit_key)] if explicit_key else []) + args.identity_files + list(config.get("identityfile", []))
    keys = list(dict.fromkeys(os.path.expanduser(k) for k in keys))

    # known_hosts: host var, then -o UserKnownHostsFile, then env GLMOPS_KNOWN_HOSTS, then ssh config
    known = hostvars.get("glmops_known_hosts") or args.values.get("userknownhostsfile") \
        or os.environ.get("GLMOPS_KNOWN_HOSTS") or config.get("userknownhostsfile") or "~/.ssh/known_hosts"
    known_hosts = str(known).split()[0]  # ssh allows several files; the first is read and written

    policy = host_key_checking
    for var in ("ansible_host_key_checking", "host_key_checking"):
        if policy is None and hostvars.get(var) not in (None, ""):
            policy = _policy(hostvars[var], var, name)
    env_policy = _env_policy()
    if policy is None and env_policy == "no":  # as Ansible: host_key_checking=False wins over ssh args
        policy = "no"
    if policy is None and "stricthostkeychecking" in args.values:
        policy = _policy(args.values["stricthostkeychecking"], "ansible_ssh_common_args: StrictHostKeyChecking", name)
    if policy is None and env_policy is not None:
        policy = env_policy
    if policy is None and "stricthostkeychecking" in config:
        policy = _policy(config["stricthostkeychecking"], f"{config_path}: StrictHostKeyChecking", name)

    jump_value, jump_where = pick("glmops_proxy_jump", "proxyjump")
    jumps = _jump_hosts(str(jump_value), jump_where, name, config_path) if jump_value else []

    interval_value, interval_where = pick("glmops_server_alive_interval", "serveraliveinterval")
    count_value, count_where = pick("glmops_server_alive_count_max", "serveralivecountmax")
    timeout_value, timeout_where = pick("glmops_connect_timeout", "connecttimeout")
    return SSHSettings(
        hostname=str(hostname),
        port=port,
        user=str(user) if user else None,
        key_filenames=keys,
        explicit_key=os.path.expanduser(str(explicit_key)) if explicit_key else None,
        known_hosts=known_hosts,
        host_key_checking=policy or "yes",
        proxy_jump=jumps,
        keepalive_interval=float(_int(interval_value, interval_where, name, 0, 86400)) if interval_value is not None else DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_count=_int(count_value, count_where, name, 1, 1000) if count_value is not None else DEFAULT_KEEPALIVE_COUNT,
        connect_timeout=float(_int(timeout_value, timeout_where, name, 1, 3600)) if timeout_value is not None else None,
        warnings=warnings,
    )
