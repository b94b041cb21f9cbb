"""Values derived from secrets never print (issue 10, item 4): encodings and slices of each secret,
and values read with lookup('env', NAME) when NAME looks secret."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import glmops, inventory, write
from glmops.output.redact import is_secret_name

API_KEY = "sk-AbC123xyz789QrS"
ENV_TOKEN = "tk_9f8E7d6C5b4A"
PLAIN = "Plain-Value-4711xq"  # an env value with an ordinary name, stored in a secret-named variable


def derived_forms() -> dict[str, str]:
    return {
        "upper": API_KEY.upper(),
        "lower": API_KEY.lower(),
        "b64": base64.b64encode(API_KEY.encode()).decode(),
        "urlencoded": quote(API_KEY + "/&", safe=""),
        "prefix": API_KEY[:8],
        "slice": API_KEY[3:11],
        "env": ENV_TOKEN,
        "env lower": ENV_TOKEN.lower(),
        "env b64": base64.b64encode(ENV_TOKEN.encode()).decode(),
        "secret var from plain env": PLAIN,
        "json of env": json.dumps(ENV_TOKEN),
        "shell quoted": shlex.quote(API_KEY + " x'y"),
    }


PLAYBOOK = """
    - hosts: all
      gather_facts: false
      vars:
        api_key: "{api_key}"
        odd_secret: "{api_key} x'y"
        url_secret: "{api_key}/&"
        secret_dir: /etc/appdir9
        db_password: "{{{{ lookup('env', 'GLMOPS_PLAIN_VALUE') }}}}"
      tasks:
        - debug: {{msg: "{{{{ api_key | upper }}}} {{{{ api_key | lower }}}} {{{{ api_key | b64encode }}}}"}}
        - debug: {{msg: "{{{{ url_secret | urlencode }}}} {{{{ api_key[:8] }}}} {{{{ api_key[3:11] }}}}"}}
        - debug: {{msg: "{{{{ lookup('env', 'GLMOPS_TEST_TOKEN') }}}} {{{{ lookup('env', 'GLMOPS_TEST_TOKEN') | lower }}}}"}}
        - debug: {{msg: "{{{{ {{'t': lookup('env', 'GLMOPS_TEST_TOKEN')}} | to_json }}}} {{{{ db_password }}}}"}}
        - command: echo {{{{ lookup('env', 'GLMOPS_TEST_TOKEN') | b64encode }}}} {{{{ odd_secret | quote }}}}
        - debug: {{msg: "still shown: changed CHANGELOG 123456 Change /etc/apps"}}
    """


@pytest.mark.parametrize("mode", [["--json"], ["-vv"]])
def test_derived_secret_values_never_print(tmp_path: Path, sshd, mode: list[str]) -> None:
    book = write(tmp_path / "site.yml", PLAYBOOK.format(api_key=API_KEY))
    inv = inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
    run = glmops("run", str(book), "-i", str(inv), *mode, cwd=tmp_path,
                 env={"GLMOPS_TEST_TOKEN": ENV_TOKEN, "GLMOPS_PLAIN_VALUE": PLAIN})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    for name, form in derived_forms().items():
        assert form not in output, f"{name} ({form!r}) printed"
    assert "********" in output
    assert "still shown: changed CHANGELOG 123456 Change /etc/apps" in output


@pytest.mark.parametrize("name,secret", [
    ("hf_token", True), ("GITHUB_TOKEN", True), ("accessToken", True), ("db_password", True),
    ("ansible_become_pass", True), ("ZHIPU_API_KEY", True), ("api_keys", True), ("client_secret", True),
    ("private_key_passphrase", True),
    # counts and paths that merely contain the letters: their values (512, a path) must stay readable
    ("max_tokens", False), ("server_max_tokens", False), ("tokenizer_path", False), ("bypass_proxy", False),
    ("ansible_ssh_private_key_file", False), ("passenger", False),
])
def test_secret_names_are_whole_words(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
