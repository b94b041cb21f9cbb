"""SSH settings as users already have them: ~/.ssh/config aliases, ansible_ssh_*_args, ProxyJump,
passwords (--ask-pass, --ask-become-pass, inventory add --copy-id). Real sshd servers throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, events, inventory, results, write
from sshd import SshServer, free_port

from glmops.connection.sshopts import parse_ssh_args, resolve
from glmops.errors import GlmopsError

PLAYBOOK = """
    - hosts: all
      gather_facts: false
      tasks:
        - name: who
          command: id -un
"""


def _home(tmp_path: Path, config: str) -> dict[str, str]:
    """An environment whose HOME holds `config` as ~/.ssh/config (the real one is never read)."""
    home = tmp_path / "home"
    write(home / ".ssh" / "config", config)
    env = {"HOME": str(home)}
    for name in ("GLMOPS_SSH_CONFIG", "GLMOPS_KNOWN_HOSTS", "GLMOPS_HOST_KEY_CHECKING", "ANSIBLE_HOST_KEY_CHECKING"):
        env[name] = ""
    return env


def _run(tmp_path: Path, hosts: dict, env: dict[str, str], *args: str, input: str | None = None,
         playbook: str = PLAYBOOK) -> subprocess.CompletedProcess[str]:
    inv = inventory(tmp_path / "hosts.yml", hosts)
    book = write(tmp_path / "site.yml", playbook)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv), "--json", *args],
                          cwd=tmp_path, env=full_env, input=input or "", capture_output=True, text=True, timeout=120)


# -- parsing, no connection ------------------------------------------------------------------
def test_ssh_args_are_read_and_unsupported_ones_named() -> None:
    args = parse_ssh_args("-o UserKnownHostsFile=/k -oStrictHostKeyChecking=accept-new -J j1,u@j2:2200 -i /key -p 2222 "
                          "-o 'ServerAliveInterval 5' -o ControlMaster=auto -o Ciphers=aes128-ctr -C", "ansible_ssh_common_args", "h")
    assert args.values == {"userknownhostsfile": "/k", "stricthostkeychecking": "accept-new", "proxyjump": "j1,u@j2:2200",
                           "port": "2222", "serveraliveinterval": "5"}
    assert args.identity_files == ["/key"]
    text = "\n".join(args.warnings)
    assert "ControlMaster=auto" in text and "Ciphers=aes128-ctr" in text and "-C" in text
    with pytest.raises(GlmopsError, match="needs a value"):
        parse_ssh_args("-o", "ansible_ssh_common_args", "h")
    with pytest.raises(GlmopsError, match="only ssh options"):
        parse_ssh_args("-p 22 host", "ansible_ssh_extra_args", "h")


def test_inventory_wins_over_args_which_win_over_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "config", """
        Host box
          HostName 10.1.2.3
          Port 2201
          User alice
          IdentityFile ~/.ssh/box_key
          ProxyJump gate
          ServerAliveInterval 7
          StrictHostKeyChecking accept-new
          UserKnownHostsFile /cfg/known
        Host gate
          HostName 10.9.9.9
          User gateuser
    """)
    monkeypatch.setenv("GLMOPS_SSH_CONFIG", str(config))
    for name in ("GLMOPS_KNOWN_HOSTS", "GLMOPS_HOST_KEY_CHECKING", "ANSIBLE_HOST_KEY_CHECKING"):
        monkeypatch.delenv(name, raising=False)
    plain = resolve("box", {})
    assert (plain.hostname, plain.port, plain.user, plain.known_hosts, plain.host_key_checking) == \
        ("10.1.2.3", 2201, "alice", "/cfg/known", "accept-new")
    assert plain.key_filenames == [os.path.expanduser("~/.ssh/box_key")] and plain.keepalive_interval == 7
    assert [(j.hostname, j.port, j.user) for j in plain.proxy_jump] == [("10.9.9.9", 22, "gateuser")]
    args = resolve("box", {"ansible_ssh_common_args": "-p 2300 -o StrictHostKeyChecking=no -J none -o ServerAliveCountMax=9"})
    assert (args.port, args.host_key_checking, args.proxy_jump, args.keepalive_count) == (2300, "no", [], 9)
    explicit = resolve("box", {"ansible_port": 2400, "ansible_user": "bob", "ansible_host_key_checking": True,
                               "ansible_ssh_common_args": "-p 2300 -o User=carol"})
    assert (explicit.port, explicit.user, explicit.host_key_checking) == (2400, "bob", "yes")
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    assert resolve("box", {"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes"}).host_key_checking == "no"


# -- real connections ------------------------------------------------------------------------
def _alias_home(tmp_path: Path, sshd: SshServer) -> dict[str, str]:
    return _home(tmp_path, f"""
        Host gpu-box
          HostName {sshd.host}
          Port {sshd.port}
          User root
          IdentityFile {sshd.client_key}
          UserKnownHostsFile {sshd.known_hosts}
    """)


def test_host_known_only_by_its_ssh_config_alias(tmp_path: Path, sshd: SshServer) -> None:
    env = _alias_home(tmp_path, sshd)
    done = _run(tmp_path, {"gpu-box": {}}, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "who")["gpu-box"]["result"]["stdout"] == "root"
    # the alias really comes from HOME's config: without it the name does not even resolve
    (tmp_path / "home" / ".ssh" / "config").write_text("")
    missing = _run(tmp_path, {"gpu-box": {}}, env)
    assert missing.returncode == 4 and "gpu-box" in results(missing.stdout, "who")["gpu-box"]["msg"]


def test_known_hosts_named_in_common_args_and_unsupported_options_warned(tmp_path: Path, sshd: SshServer) -> None:
    env = _home(tmp_path, "")
    vars_ = {k: v for k, v in sshd.hostvars().items() if k != "glmops_known_hosts"}
    vars_["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes -o ControlMaster=auto"
    vars_["ansible_ssh_extra_args"] = "-o Ciphers=aes256-ctr"
    done = _run(tmp_path, {"target": vars_}, env)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [e["msg"] for e in events(done.stdout) if e["event"] == "warning"]
    assert any("ControlMaster=auto" in w for w in warnings) and any("Ciphers=aes256-ctr" in w for w in warnings)
    # the file is really the one read: an empty one makes the key unknown
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    vars_["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={empty}"
    refused = _run(tmp_path, {"target": vars_}, env)
    assert refused.returncode == 4 and "unknown host key" in results(refused.stdout, "who")["target"]["msg"]
    # ... and StrictHostKeyChecking=accept-new records it there
    vars_["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={empty} -o StrictHostKeyChecking=accept-new"
    accepted = _run(tmp_path, {"target": vars_}, env)
    assert accepted.returncode == 0 and f"[{sshd.host}]:{sshd.port}" in empty.read_text()


def _accepted(server: SshServer) -> int:
    return Path(server.log).read_text(errors="replace").count("Accepted publickey")


def test_proxy_jump_through_one_and_two_jump_hosts(tmp_path: Path, sshd: SshServer, sshd_factory) -> None:
    target = sshd_factory()
    known = tmp_path / "known_hosts"
    known.write_text(Path(sshd.known_hosts).read_text() + Path(target.known_hosts).read_text())
    env = _home(tmp_path, f"""
        Host jumpbox
          HostName {sshd.host}
          Port {sshd.port}
          User root
          IdentityFile {sshd.client_key}
    """)
    hostvars = {**target.hostvars(), "glmops_known_hosts": str(known), "ansible_ssh_common_args": "-J jumpbox"}
    before = _accepted(sshd)
    done = _run(tmp_path, {"behind": hostvars}, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "who")["behind"]["result"]["stdout"] == "root"
    assert _accepted(sshd) == before + 1  # the jump host really carried the connection
    hostvars["ansible_ssh_common_args"] = "-o ProxyJump=jumpbox,jumpbox"  # a chain: jump -> jump -> target
    chained = _run(tmp_path, {"behind": hostvars}, env)
    assert chained.returncode == 0, chained.stdout + chained.stderr
    assert _accepted(sshd) == before + 3
    # a jump host that cannot reach the target: a clear UNREACHABLE naming the jump host
    hostvars["ansible_port"] = 1
    broken = _run(tmp_path, {"behind": hostvars}, env)
    msg = results(broken.stdout, "who")["behind"]["msg"]
    assert broken.returncode == 4 and "jump host root@127.0.0.1" in msg and "cannot reach 127.0.0.1:1" in msg


# -- passwords -------------------------------------------------------------------------------
USER = "glmopspw"
PASSWORD = "S3cret-pw-for-tests"


class PasswordSshServer(SshServer):
    """sshd that also accepts passwords and reads ~/.ssh/authorized_keys."""

    def _config(self) -> str:
        text = super()._config()
        text = text.replace("PasswordAuthentication no", "PasswordAuthentication yes")
        return text.replace(f"AuthorizedKeysFile {self.state_dir}/authorized_keys",
                            f"AuthorizedKeysFile .ssh/authorized_keys {self.state_dir}/authorized_keys")


@pytest.fixture
def password_host(tmp_path: Path) -> Iterator[PasswordSshServer]:
    """A throwaway local user with a password (and sudo that asks for it), on a password sshd."""
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n", text=True, check=True)
    sudoers = Path("/etc/sudoers.d/glmops-test-pw")
    sudoers.write_text(f"{USER} ALL=(ALL) ALL\n")
    sudoers.chmod(0o440)
    server = PasswordSshServer(str(tmp_path / "pwsshd"))
    server.user = USER
    try:
        server.start()
        yield server
    finally:
        server.stop()
        sudoers.unlink()
        subprocess.run(["userdel", "-r", USER], capture_output=True)


def _password_vars(server: SshServer) -> dict:
    # api_port: a port nothing listens on, so a server running elsewhere on this machine (6006) is not seen
    return {"ansible_host": server.host, "ansible_port": server.port, "ansible_user": USER, "glmops_known_hosts": server.known_hosts,
            "api_port": free_port()}


def test_ask_pass_and_become_pass_from_stdin_never_shown(tmp_path: Path, password_host: PasswordSshServer) -> None:
    env = _home(tmp_path, "")
    playbook = """
        - hosts: all
          gather_facts: false
          tasks:
            - name: who
              command: id -un
            - name: root
              shell: id -u; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f"; echo; done 2>/dev/null
              become: true
    """
    no_password = _run(tmp_path, {"pw": _password_vars(password_host)}, env, playbook=playbook)
    assert no_password.returncode == 4 and "authentication failed" in results(no_password.stdout, "who")["pw"]["msg"]
    done = _run(tmp_path, {"pw": _password_vars(password_host)}, env, "-k", "--ask-become-pass",
                input=f"{PASSWORD}\n\n", playbook=playbook)  # empty become password: the SSH one
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "who")["pw"]["result"]["stdout"] == USER
    root = results(done.stdout, "root")["pw"]
    assert root["result"]["stdout"].splitlines()[0] == "0"
    lines = root["result"]["stdout"].splitlines()
    assert lines[1].startswith("sudo -A ")  # the parent of the command: sudo, fed through SUDO_ASKPASS
    # no process's argv held the password (output redaction would show it as ********)
    assert "********" not in root["result"]["stdout"] and PASSWORD not in done.stdout + done.stderr
    wrong = _run(tmp_path, {"pw": _password_vars(password_host)}, env, "-k", input="wrong\n", playbook=PLAYBOOK)
    assert wrong.returncode == 4 and "authentication failed" in results(wrong.stdout, "who")["pw"]["msg"]


def test_inventory_add_copy_id_installs_the_key_once(tmp_path: Path, password_host: PasswordSshServer) -> None:
    env = _home(tmp_path, "")
    env["GLMOPS_KNOWN_HOSTS"] = password_host.known_hosts
    ssh_dir = Path(env["HOME"]) / ".ssh"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "id_ed25519")], check=True)
    inv = tmp_path / "inventory" / "hosts.yml"
    login = ["--", "ssh", "-p", str(password_host.port), f"{USER}@{password_host.host}"]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}

    def add() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "glmops", "inventory", "add", "pw", "-i", str(inv), "--copy-id", *login],
                              input=PASSWORD + "\n", env=full_env, capture_output=True, text=True, timeout=60)

    first = add()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed on pw" in first.stdout and PASSWORD not in first.stdout + first.stderr + inv.read_text()
    second = add()
    assert second.returncode == 0 and "already installed" in second.stdout
    authorized = Path(f"/home/{USER}/.ssh/authorized_keys").read_text()
    assert authorized.count((ssh_dir / "id_ed25519.pub").read_text().split()[1]) == 1
    # later runs need no password at all
    done = subprocess.run([sys.executable, "-m", "glmops", "run", str(write(tmp_path / "site.yml", PLAYBOOK)), "-i", str(inv), "--json"],
                          env=full_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "who")["pw"]["result"]["stdout"] == USER
    wrong = subprocess.run([sys.executable, "-m", "glmops", "inventory", "add", "pw2", "-i", str(inv), "--copy-id", *login],
                           input="wrong\n", env=full_env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 4 and "authentication failed" in wrong.stderr and "Traceback" not in wrong.stderr


# -- the day-2 commands and the tunnel: passwords and aliases -----------------------------------
def _glmops(tmp_path: Path, env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "GLMOPS_INVENTORY": "",
                "XDG_STATE_HOME": str(tmp_path / "state"), **env}
    return subprocess.run([sys.executable, "-m", "glmops", *args], cwd=tmp_path, env=full_env, input=input,
                          capture_output=True, text=True, timeout=120)


def test_day2_ask_pass_and_become_pass_from_stdin(tmp_path: Path, password_host: PasswordSshServer) -> None:
    env = _home(tmp_path, "")
    inv = str(inventory(tmp_path / "hosts.yml", {"pw": _password_vars(password_host)}))
    # without a password the host cannot be logged in to: unreachable (exit 4)
    refused = _glmops(tmp_path, env, "status", "pw", "-i", inv, "--json")
    assert refused.returncode == 4 and "authentication failed" in refused.stdout, refused.stdout + refused.stderr
    # -k: logged in; nothing is deployed there, so the server is down (exit 2), and that is known only from the host
    done = _glmops(tmp_path, env, "status", "pw", "-i", inv, "--json", "-k", input=f"{PASSWORD}\n")
    assert done.returncode == 2, done.stdout + done.stderr
    row = json.loads(done.stdout)[0]
    assert row["state"] == "down" and "not deployed here" in row["message"]
    assert PASSWORD not in done.stdout + done.stderr
    # -K (empty: the SSH password) with -b: the log is readable by root only, so only sudo with that password shows it
    deploy = tmp_path / "rootonly"
    write(deploy / "logs" / "server.log", "only root reads this line\n")
    deploy.chmod(0o700)
    as_root = ("logs", "pw", "-i", inv, "-b", "-e", f"deploy_dir={deploy}")
    rooted = _glmops(tmp_path, env, *as_root, "-k", "-K", input=f"{PASSWORD}\n\n")
    assert rooted.returncode == 0 and "only root reads this line" in rooted.stdout, rooted.stdout + rooted.stderr
    assert PASSWORD not in rooted.stdout + rooted.stderr
    no_become_pass = _glmops(tmp_path, env, *as_root, "-k", input=f"{PASSWORD}\n")
    assert "only root reads this line" not in no_become_pass.stdout
    wrong = _glmops(tmp_path, env, "status", "pw", "-i", inv, "--json", "-k", input="wrong\n")
    assert wrong.returncode == 4 and "authentication failed" in wrong.stdout
    empty = _glmops(tmp_path, env, "status", "pw", "-i", inv, "-k", input="\n")
    assert empty.returncode != 0 and "--ask-pass: no password was given" in empty.stderr and "Traceback" not in empty.stderr


def test_day2_and_tunnel_reach_a_host_known_only_by_its_ssh_config_alias(tmp_path: Path, sshd: SshServer) -> None:
    from httpserver import LoopbackHTTPServer

    env = _alias_home(tmp_path, sshd)
    done = _glmops(tmp_path, env, "status", "gpu-box", "--json", "-e", f"deploy_dir={tmp_path / 'none'}", "-e", f"api_port={free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr  # logged in: the server is down, not the host unknown
    assert json.loads(done.stdout)[0]["state"] == "down"
    with LoopbackHTTPServer() as http:
        http.files["/health"] = b'{"status":"ok"}'
        local = free_port()
        started = _glmops(tmp_path, env, "tunnel", "gpu-box", "--local-port", str(local), "--remote-port", str(http.port), "--background")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/health", timeout=10) as response:
                assert response.read() == b'{"status":"ok"}'
        finally:
            stopped = _glmops(tmp_path, env, "tunnel", "stop", "gpu-box")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # an inventory that does not name the alias does not hide it either
    inv = str(inventory(tmp_path / "hosts.yml", {"other": {"ansible_host": "127.0.0.1"}}))
    assert _glmops(tmp_path, env, "status", "gpu-box", "-i", inv, "--json", "-e", f"deploy_dir={tmp_path / 'none'}", "-e", f"api_port={free_port()}").returncode == 2
    # without the alias the name is an unknown host, as before
    (tmp_path / "home" / ".ssh" / "config").write_text("")
    unknown = _glmops(tmp_path, env, "status", "gpu-box", "--json")
    assert unknown.returncode == 3 or "no host matches 'gpu-box'" in unknown.stderr, unknown.stdout + unknown.stderr
    assert "no host matches 'gpu-box'" in unknown.stderr
    tunnel = _glmops(tmp_path, env, "tunnel", "gpu-box")
    assert tunnel.returncode != 0 and "not found" in tunnel.stderr and "Traceback" not in tunnel.stderr
