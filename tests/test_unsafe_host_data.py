"""Data from hosts is never code: text a host returns (command output, facts, a fetched file, an
HTTP answer) that holds `{{ ... }}` is printed, stored and passed on literally, never rendered as a
template on the controller; an expression built from it is never evaluated. Real runs of `glmops
run` over the test sshd (and the local connection for gathered facts)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, events, glmops, inventory, results, write
from helpers import run_playbook as run
from httpserver import LoopbackHTTPServer


def _payload(tmp_path: Path) -> str:
    """Host text that runs `touch PWNED` on the controller if it is ever rendered as a template."""
    return "{{ lookup('pipe', 'touch %s') }}" % (tmp_path / "PWNED")


def _host_file(tmp_path: Path, text: str) -> Path:
    """A file on the host (the test sshd runs on this machine) holding `text`."""
    return write(tmp_path / "host" / "data.txt", text + "\n")


def _printed(output: str) -> str:
    """Every message and result of the run's --json events, as text (the literal payload must be there)."""
    return "\n".join(json.dumps({k: e.get(k) for k in ("msg", "result")}) for e in events(output) if e["event"] == "host_result")


def _assert_not_rendered(tmp_path: Path, done, *, payload: str) -> None:
    assert not (tmp_path / "PWNED").exists(), "host data was rendered as a template on the controller"
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.dumps(payload)[1:-1] in _printed(done.stdout)


# Each case: tasks run after `command: cat FILE` registered `out` (FILE holds the payload).
CASES = {
    "debug var": """
        - debug: {var: out.stdout}
        - debug: {var: out}
        """,
    "debug msg": """
        - debug: {msg: "{{ out.stdout }}"}
        - debug: {msg: "the host said {{ out.stdout }}"}
        """,
    "set_fact then use": """
        - set_fact: {said: "{{ out.stdout }}", told: "the host said {{ out.stdout }}"}
        - debug: {var: said}
        - debug: {msg: "{{ told }}"}
        - set_fact: {again: "{{ said }}"}
        - debug: {var: again}
        """,
    "nested in lists and dicts": """
        - debug: {var: out.stdout_lines}
        - set_fact: {wrapped: {lines: "{{ out.stdout_lines }}", first: ["{{ out.stdout_lines[0] }}"]}}
        - debug: {var: wrapped}
        - debug: {var: "wrapped.first[0]"}
        """,
    "after filters": """
        - set_fact:
            trimmed: "{{ out.stdout | trim }}"
            first: "{{ out.stdout_lines | first }}"
            mapped: "{{ out.stdout_lines | map('trim') | list }}"
            shouted: "{{ out.stdout | upper | lower }}"
        - debug: {var: trimmed}
        - debug: {var: first}
        - debug: {var: mapped}
        - debug: {msg: "{{ shouted }} {{ mapped[0] }}"}
        - debug: {msg: "{{ out | to_nice_yaml }} {{ out | to_json }}"}
        """,
    "loop items": """
        - debug: {msg: "{{ item }}"}
          loop: "{{ out.stdout_lines }}"
          register: looped
        - debug: {var: "looped.results[0].msg"}
        """,
    "command argv": """
        - command: {argv: [printf, "%s", "{{ out.stdout }}"]}
          register: echoed
        - debug: {var: echoed.stdout}
        """,
    "assert and when": """
        - assert:
            that:
              - out.rc == 0
              - out.stdout is search('lookup')
              - "'pipe' in out.stdout"
              - out.stdout_lines | length == 1
        - debug: {msg: "{{ out.stdout }}"}
          when: out.stdout.startswith('{' ~ '{') and out.rc == 0
        - debug: {msg: "never"}
          when: out.stdout == 'x'
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_output_is_never_rendered(tmp_path: Path, inv: Path, case: str) -> None:
    payload = _payload(tmp_path)
    source = _host_file(tmp_path, payload)
    tasks = "\n".join("    " + line for line in CASES[case].strip("\n").splitlines())
    playbook = f"""
        - hosts: all
          tasks:
            - command: cat {source}
              register: out
{tasks}
        """
    done = run(tmp_path, inv, playbook)
    _assert_not_rendered(tmp_path, done, payload=payload)
    if case == "assert and when":
        shown = [e for e in events(done.stdout) if e["event"] == "host_result" and e["task"] == "debug"]
        assert [e["status"] for e in shown] == ["ok", "skipped"]


def test_copy_content_lands_literally(tmp_path: Path, inv: Path) -> None:
    payload = _payload(tmp_path)
    source = _host_file(tmp_path, payload)
    dest = tmp_path / "copied.txt"
    playbook = f"""
        - hosts: all
          tasks:
            - command: cat {source}
              register: out
            - copy: {{content: "host: {{{{ out.stdout }}}}\\n", dest: "{dest}"}}
            - debug: {{msg: done}}
        """
    done = run(tmp_path, inv, playbook)
    assert not (tmp_path / "PWNED").exists()
    assert done.returncode == 0, done.stdout + done.stderr
    assert dest.read_text() == f"host: {payload}\n"


def test_expression_built_from_host_text_is_not_evaluated(tmp_path: Path, inv: Path) -> None:
    """Host text without braces is an expression if it is evaluated: `debug var=` and `assert that`
    with a `{{ }}` that reads it refuse it (clear message), they never run it."""
    expression = "lookup('pipe', 'touch %s')" % (tmp_path / "PWNED")
    source = _host_file(tmp_path, expression)
    playbook = f"""
        - hosts: all
          tasks:
            - command: cat {source}
              register: out
            - name: var
              debug: {{var: "{{{{ out.stdout | trim }}}}"}}
              ignore_errors: true
            - name: that
              assert: {{that: "{{{{ out.stdout_lines | first }}}}"}}
              ignore_errors: true
        """
    done = run(tmp_path, inv, playbook)
    assert not (tmp_path / "PWNED").exists(), "host text was evaluated as an expression"
    assert done.returncode == 0, done.stdout + done.stderr
    for task in ("var", "that"):
        shown = results(done.stdout, task)["target"]
        assert shown["status"] == "failed"
        assert "comes from host data" in shown["msg"], shown["msg"]


def test_decoded_host_data_stays_data(tmp_path: Path, inv: Path) -> None:
    """Base64 (as slurp returns) and JSON from the host hold no braces until a filter decodes them."""
    payload = _payload(tmp_path)
    source = _host_file(tmp_path, base64.b64encode(payload.encode()).decode())
    config = write(tmp_path / "host" / "config.json", json.dumps({"name": payload}))
    playbook = f"""
        - hosts: all
          tasks:
            - command: cat {source}
              register: encoded
            - command: cat {config}
              register: config
            - set_fact:
                decoded: "{{{{ encoded.stdout | b64decode }}}}"
                parsed: "{{{{ config.stdout | from_json }}}}"
            - debug: {{var: decoded}}
            - debug: {{var: parsed.name}}
            - debug: {{msg: "{{{{ parsed }}}}"}}
        """
    done = run(tmp_path, inv, playbook)
    _assert_not_rendered(tmp_path, done, payload=payload)


def test_fetched_file_read_back_stays_data(tmp_path: Path, inv: Path) -> None:
    """A file fetched from the host and read with lookup('file') (as in Ansible: lookup results are unsafe)."""
    payload = _payload(tmp_path)
    source = _host_file(tmp_path, payload)
    fetched = tmp_path / "fetched" / "data.txt"
    playbook = f"""
        - hosts: all
          tasks:
            - fetch: {{src: "{source}", dest: "{fetched}", flat: true}}
            - set_fact: {{got: "{{{{ lookup('file', '{fetched}') }}}}"}}
            - debug: {{var: got}}
        """
    done = run(tmp_path, inv, playbook)
    _assert_not_rendered(tmp_path, done, payload=payload)
    assert fetched.read_text() == payload + "\n"


@pytest.mark.parametrize("gathered", ["lazily", "by a setup task"])
def test_facts_stay_data(tmp_path: Path, gathered: str) -> None:
    """Facts (ansible_env.PATH) of a host whose PATH holds the payload: the local connection, whose
    host is the controller itself, so the test sets the PATH that the facts report."""
    payload = _payload(tmp_path)
    hosts = inventory(tmp_path / "hosts.yml", {"me": {"ansible_connection": "local"}})
    setup = "- setup:" if gathered == "by a setup task" else ""
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: {gathered == "lazily"}
          tasks:
            {setup}
            - debug: {{msg: "{{{{ ansible_env }}}}"}}
            - debug: {{var: ansible_env.PATH}}
            - set_fact: {{path_copy: "{{{{ ansible_env.PATH }}}}"}}
            - debug: {{var: path_copy}}
        """)
    done = glmops("run", str(book), "-i", str(hosts), "--json", cwd=tmp_path,
                  env={"PATH": f"{os.environ['PATH']}:/nonexistent/{payload}"})
    _assert_not_rendered(tmp_path, done, payload=payload)


def test_deploy_verify_prints_the_models_answer_as_data(tmp_path: Path, inv: Path) -> None:
    """The deploy's own verify step (roles/api_server/tasks/verify.yml: ask the model, print the
    answer) against a loopback HTTP server whose answer holds a template."""
    payload = _payload(tmp_path)
    verify = yaml.safe_load((ROOT / "roles" / "api_server" / "tasks" / "verify.yml").read_text())
    asked = [t for t in verify if t.get("name") in ("Ask the model one question", "The answer")]
    assert len(asked) == 2 and "uri" in asked[0] and "debug" in asked[1]
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": payload}, "finish_reason": "stop"}]}
    with LoopbackHTTPServer() as server:
        server.files["/v1/chat/completions"] = json.dumps(answer).encode()
        play = [{"hosts": "all", "gather_facts": False, "tasks": asked,
                 "vars": {"api_port": server.port, "served_model_name": "chatglm3-6b", "server_smoke_prompt": "hi",
                          "server_smoke_reply_limit": 8, "api_keys": [], "server_smoke_every_run": True}}]
        done = run(tmp_path, inv, yaml.safe_dump(play))
    _assert_not_rendered(tmp_path, done, payload=payload)
    shown = results(done.stdout, "The answer")["target"]
    assert shown["msg"] == f"chatglm3-6b on target answers: {payload}"
    assert len(server.requests) == 1


def test_code_stays_code(tmp_path: Path) -> None:
    """The playbook, vars files (include_vars, on the controller), the inventory and -e are code:
    their templates still render, also when set_fact passes them on and host data sits next to them."""
    hosts = inventory(tmp_path / "hosts.yml", {"me": {"ansible_connection": "local", "from_inventory": "{{ who }} (inventory)"}})
    write(tmp_path / "vars" / "more.yml", 'greeting: "hi {{ who }}"\n')
    book = write(tmp_path / "site.yml", """
        - hosts: all
          vars: {who: world}
          tasks:
            - command: echo host text
              register: out
            - include_vars: more.yml
            - set_fact: {both: "{{ '{{' }} who {{ '}}' }}", seen: "{{ out.stdout }}"}
            - name: greeting
              debug: {msg: "{{ greeting }} / {{ from_inventory }} / {{ from_cli }} / {{ both }} / {{ seen }}"}
        """)
    done = glmops("run", str(book), "-i", str(hosts), "--json", "-e", "from_cli='{{ who }} (-e)'", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "greeting")["me"]["msg"] == "hi world / world (inventory) / world (-e) / world / host text"
