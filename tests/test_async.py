"""`async:` / `poll:` task keywords and the async_status module (Ansible's meaning), end to end over the test sshd."""

from __future__ import annotations

from pathlib import Path

from helpers import recap, results
from helpers import run_playbook as run


def test_async_with_poll_returns_the_command_result(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          gather_facts: false
          tasks:
            - name: long
              shell: "sleep 1; echo out; echo err >&2; exit 3"
              async: 60
              poll: 1
              register: long
              ignore_errors: true
            - name: input
              command: cat
              args: {stdin: "fed in"}
              async: 60
              poll: 1
              register: fed
            - name: show
              debug: {msg: "{{ long.rc }} {{ long.stdout }} {{ long.stderr }} {{ long.finished }} {{ fed.stdout }}"}
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert results(result.stdout, "long")["target"]["result"]["failed"] is True
    assert results(result.stdout, "show")["target"]["result"]["msg"] == "3 out err True fed in"


def test_poll_zero_returns_a_job_id_and_async_status_follows_it(tmp_path: Path, inv: Path) -> None:
    marker = tmp_path / "done"
    playbook = f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: start
              shell: "sleep 1; echo finished > {marker}; echo job-output"
              async: 60
              poll: 0
              register: job
            - name: not yet
              debug: {{msg: "{{{{ job.ansible_job_id }}}} {{{{ job.started }}}} {{{{ job.finished }}}}"}}
            - name: wait
              async_status: {{jid: "{{{{ job.ansible_job_id }}}}"}}
              register: status
              until: status.finished
              retries: 30
              delay: 1
            - name: cleanup
              async_status: {{jid: "{{{{ job.ansible_job_id }}}}", mode: cleanup}}
            - name: show
              debug: {{msg: "{{{{ status.stdout }}}} {{{{ status.rc }}}}"}}
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    jid, started, finished = results(result.stdout, "not yet")["target"]["result"]["msg"].split()
    assert jid.startswith("j") and (started, finished) == ("True", "False")  # ansible-core 2.19: booleans
    assert results(result.stdout, "show")["target"]["result"]["msg"] == "job-output 0"
    assert marker.read_text() == "finished\n"
    assert not list((Path.home() / ".glmops_async").glob(f"{jid}.*"))  # cleaned up


def test_async_time_limit(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          gather_facts: false
          tasks:
            - name: slow
              command: sleep 30
              async: 1
              poll: 1
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode != 0
    assert "async task did not complete within the requested time - 1s" in results(result.stdout, "slow")["target"]["result"]["msg"]
    assert recap(result.stdout)["target"]["failed"] == 1


def test_async_on_a_module_without_support_is_a_load_error(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          tasks:
            - name: copy
              copy: {content: "x", dest: /tmp/x}
              async: 10
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode != 0
    assert "site.yml:5" in result.stderr and "module 'copy' does not support async" in result.stderr
    assert "async/poll work with: command, raw, shell" in result.stderr


def test_async_status_of_an_unknown_job_fails_clearly(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          gather_facts: false
          tasks:
            - name: status
              async_status: {jid: j000000000000.1}
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode != 0
    assert "could not find job j000000000000.1" in results(result.stdout, "status")["target"]["result"]["msg"]
