"""`glmops run` end to end against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_playbook as run
from helpers import events, glmops, inventory, recap, results, write


def test_files_then_rerun_changes_nothing(tmp_path: Path, inv: Path) -> None:
    work = tmp_path / "work"
    write(tmp_path / "templates" / "app.conf.j2", "port={{ port }}\nhost={{ inventory_hostname }}\n")
    playbook = f"""
        - hosts: all
          vars: {{port: 6006}}
          tasks:
            - name: dir
              file: path={work} state=directory mode=0750
            - name: conf
              template: src=app.conf.j2 dest={work}/app.conf mode=0640
            - name: copy
              copy: {{content: "hello\\n", dest: "{work}/hello.txt"}}
            - name: line
              lineinfile: {{path: "{work}/env", line: "DEBUG=false", regexp: "^DEBUG=", create: true}}
            - name: once
              command: touch {work}/made creates={work}/made
        """
    first = run(tmp_path, inv, playbook)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["target"]["changed"] == 5
    assert (work / "app.conf").read_text() == "port=6006\nhost=target\n"
    assert (work / "env").read_text() == "DEBUG=false\n"
    assert oct((work / "app.conf").stat().st_mode & 0o777) == "0o640"
    assert oct(work.stat().st_mode & 0o777) == "0o750"
    second = run(tmp_path, inv, playbook)
    assert second.returncode == 0
    stats = recap(second.stdout)["target"]
    assert stats["changed"] == 0 and stats["ok"] == 5


def test_check_mode_changes_nothing_and_diff_shows_change(tmp_path: Path, inv: Path) -> None:
    target = tmp_path / "conf.txt"
    target.write_text("a=1\n")
    playbook = f"""
        - hosts: all
          tasks:
            - name: conf
              copy: {{content: "a=2\\n", dest: "{target}"}}
            - name: new dir
              file: {{path: "{tmp_path}/newdir", state: directory}}
            - name: cmd
              command: touch {tmp_path}/touched
        """
    result = run(tmp_path, inv, playbook, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.read_text() == "a=1\n"
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "touched").exists()
    conf = results(result.stdout, "conf")["target"]
    assert conf["status"] == "changed"
    assert conf["diff"][0]["before"] == "a=1\n" and conf["diff"][0]["after"] == "a=2\n"
    assert results(result.stdout, "cmd")["target"]["status"] == "skipped"
    console = glmops("run", str(tmp_path / "site.yml"), "-i", str(inv), "--check", "--diff", cwd=tmp_path)
    assert "-a=1" in console.stdout and "+a=2" in console.stdout


def test_handlers_run_once_in_definition_order_only_when_changed(tmp_path: Path, inv: Path) -> None:
    log = tmp_path / "handlers.log"
    playbook = f"""
        - hosts: all
          tasks:
            - name: change one
              copy: {{content: "1", dest: "{tmp_path}/one"}}
              notify: [second, first]
            - name: change two
              copy: {{content: "2", dest: "{tmp_path}/two"}}
              notify: first
            - name: unchanged
              command: "true"
              changed_when: false
              notify: never
          handlers:
            - name: first
              shell: echo first >> {log}
            - name: second
              shell: echo second >> {log}
            - name: never
              shell: echo never >> {log}
        """
    assert run(tmp_path, inv, playbook).returncode == 0
    assert log.read_text() == "first\nsecond\n"
    assert run(tmp_path, inv, playbook).returncode == 0
    assert log.read_text() == "first\nsecond\n"  # nothing changed: no handler ran


def test_block_rescue_always(tmp_path: Path, inv: Path) -> None:
    playbook = f"""
        - hosts: all
          tasks:
            - block:
                - name: breaks
                  command: /bin/false
                - name: not reached
                  command: touch {tmp_path}/not-reached
              rescue:
                - name: rescue
                  command: touch {tmp_path}/rescued
              always:
                - name: always
                  command: touch {tmp_path}/always
            - name: after
              command: touch {tmp_path}/after
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "rescued").exists() and (tmp_path / "always").exists() and (tmp_path / "after").exists()
    assert not (tmp_path / "not-reached").exists()
    stats = recap(result.stdout)["target"]
    assert stats["rescued"] == 1 and stats["failed"] == 0


def test_always_runs_after_unrescued_failure_and_host_fails(tmp_path: Path, inv: Path) -> None:
    playbook = f"""
        - hosts: all
          tasks:
            - block:
                - command: /bin/false
              always:
                - command: touch {tmp_path}/always
            - name: after
              command: touch {tmp_path}/after
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 2
    assert (tmp_path / "always").exists() and not (tmp_path / "after").exists()


def test_loops_register_when_and_conditions(tmp_path: Path, inv: Path) -> None:
    playbook = f"""
        - hosts: all
          vars:
            names: [a, b, c]
          tasks:
            - name: make
              file: path={tmp_path}/{{{{ item }}}} state=touch
              loop: "{{{{ names }}}}"
              when: item != 'b'
            - name: count
              shell: ls {tmp_path} | grep -c '^[abc]$'
              register: counted
              changed_when: false
            - name: report
              debug: msg="{{{{ counted.stdout | int }}}} files"
            - name: skipped
              command: touch {tmp_path}/no
              when: counted.stdout | int > 5
            - name: with_items and loop_var
              debug: msg="{{{{ thing }}}}-{{{{ idx }}}}"
              with_items: [x, y]
              loop_control: {{loop_var: thing, index_var: idx}}
              register: looped
            - assert:
                that:
                  - looped.results | length == 2
                  - looped.results[1].msg == 'y-1'
                  - counted is succeeded
                  - counted is not changed
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if len(p.name) == 1) == ["a", "c"]
    assert results(result.stdout, "report")["target"]["msg"] == "2 files"
    assert results(result.stdout, "skipped")["target"]["status"] == "skipped"
    assert not (tmp_path / "no").exists()


def test_failed_when_changed_when_ignore_errors(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          tasks:
            - name: grep miss is fine
              command: grep nothing /etc/hostname
              register: g
              failed_when: g.rc > 1
              changed_when: false
            - name: real failure ignored
              command: /bin/false
              ignore_errors: true
            - name: still runs
              debug: msg=ok
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert results(result.stdout, "grep miss is fine")["target"]["status"] == "ok"
    assert recap(result.stdout)["target"]["ignored"] == 1


def test_retries_until(tmp_path: Path, inv: Path) -> None:
    counter = tmp_path / "n"
    playbook = f"""
        - hosts: all
          tasks:
            - name: third time lucky
              shell: echo x >> {counter}; wc -l < {counter}
              register: r
              until: r.stdout | int >= 3
              retries: 5
              delay: 0
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert counter.read_text().count("x") == 3
    assert results(result.stdout, "third time lucky")["target"]["result"]["attempts"] == 3


def test_extra_vars_forms_win_over_play_vars(tmp_path: Path, inv: Path) -> None:
    write(tmp_path / "extra.yml", "from_file: file\n")
    playbook = """
        - hosts: all
          vars: {a: play, b: play}
          tasks:
            - name: show
              debug: msg="{{ a }} {{ b }} {{ from_file }} {{ c }}"
        """
    result = run(tmp_path, inv, playbook, "-e", "a=kv", "-e", "@extra.yml", "-e", '{"c": 3}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert results(result.stdout, "show")["target"]["msg"] == "kv play file 3"


def test_tags_and_skip_tags(tmp_path: Path, inv: Path) -> None:
    playbook = f"""
        - hosts: all
          tasks:
            - {{name: one, command: "touch {tmp_path}/one", tags: [setup]}}
            - {{name: two, command: "touch {tmp_path}/two", tags: deploy}}
            - {{name: three, command: "touch {tmp_path}/three", tags: [always]}}
            - {{name: four, command: "touch {tmp_path}/four", tags: [never, debug]}}
        """
    assert run(tmp_path, inv, playbook, "--tags", "deploy").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in ("one", "two", "three", "four")) == ["three", "two"]
    assert run(tmp_path, inv, playbook, "--skip-tags", "deploy,always", "--tags", "setup,debug").returncode == 0
    assert (tmp_path / "one").exists() and (tmp_path / "four").exists()


def test_include_tasks_and_role(tmp_path: Path, inv: Path) -> None:
    write(tmp_path / "more.yml", f"""
        - name: included
          command: touch {tmp_path}/included-{{{{ item }}}}
        """)
    write(tmp_path / "roles" / "web" / "defaults" / "main.yml", "web_port: 80\n")
    write(tmp_path / "roles" / "web" / "tasks" / "main.yml", f"""
        - name: role task
          copy: {{content: "{{{{ web_port }}}}", dest: "{tmp_path}/port"}}
          notify: role handler
        """)
    write(tmp_path / "roles" / "web" / "handlers" / "main.yml", f"""
        - name: role handler
          command: touch {tmp_path}/handled
        """)
    playbook = """
        - hosts: all
          tasks:
            - include_tasks: more.yml
              loop: [x, y]
            - include_role:
                name: web
              vars: {web_port: 8080}
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "included-x").exists() and (tmp_path / "included-y").exists()
    assert (tmp_path / "port").read_text() == "8080"
    assert (tmp_path / "handled").exists()


def test_limit_and_multi_host_with_one_unreachable(tmp_path: Path, sshd, sshd_factory, unreachable_hostvars) -> None:
    second = sshd_factory()
    hosts = {"one": sshd.hostvars(), "two": second.hostvars(), "down": unreachable_hostvars}
    inv = inventory(tmp_path / "hosts.yml", hosts, groups={"web": ["one", "two"], "broken": ["down"]})
    playbook = f"""
        - hosts: all
          tasks:
            - name: mark
              command: touch {tmp_path}/{{{{ inventory_hostname }}}}
            - name: second task
              command: "true"
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 4, result.stdout
    stats = recap(result.stdout)
    assert stats["down"]["unreachable"] == 1
    assert stats["one"]["changed"] == 2 and stats["two"]["changed"] == 2
    assert (tmp_path / "one").exists() and (tmp_path / "two").exists()
    console = glmops("run", str(tmp_path / "site.yml"), "-i", str(inv), cwd=tmp_path)
    assert "unreachable" in console.stdout and "connection refused" in console.stdout
    for name in ("one", "two"):
        (tmp_path / name).unlink()
    limited = run(tmp_path, inv, playbook, "--limit", "web:!two")
    assert limited.returncode == 0
    assert list(recap(limited.stdout)) == ["one"]
    assert (tmp_path / "one").exists() and not (tmp_path / "two").exists()


def test_failing_host_leaves_play_others_continue(tmp_path: Path, sshd, sshd_factory) -> None:
    second = sshd_factory()
    inv = inventory(tmp_path / "hosts.yml", {"good": sshd.hostvars(), "bad": {**second.hostvars(), "fail_me": True}})
    playbook = f"""
        - hosts: all
          tasks:
            - name: maybe fail
              fail: msg=boom
              when: fail_me | default(false)
            - name: after
              command: touch {tmp_path}/after-{{{{ inventory_hostname }}}}
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 2
    assert (tmp_path / "after-good").exists() and not (tmp_path / "after-bad").exists()
    assert results(result.stdout, "maybe fail")["bad"]["msg"] == "boom"


def test_json_stream_is_one_object_per_line(tmp_path: Path, inv: Path) -> None:
    result = run(tmp_path, inv, "- hosts: all\n  tasks:\n    - debug: msg=hi\n")
    kinds = [e["event"] for e in events(result.stdout)]
    assert kinds[0] == "playbook_start" and kinds[-1] == "recap"
    assert "task_start" in kinds and "host_result" in kinds


def test_facts_gathered_lazily_once(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          tasks:
            - name: no facts needed
              debug: msg=plain
            - name: facts
              debug: msg="{{ ansible_facts.processor_vcpus }} cpus, {{ ansible_memtotal_mb }} MB, {{ ansible_mounts | length }} mounts"
            - assert:
                that: ansible_distribution == 'Debian' and ansible_python.executable is defined
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert " cpus, " in results(result.stdout, "facts")["target"]["msg"]


def test_facts_are_gathered_for_the_names_templates_read(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          vars: {greeting: "hi {{ ansible_hostname }}"}
          tasks:
            - name: keys
              debug: msg="{{ hostvars[inventory_hostname] | list }}"
              when: not ansible_check_mode
            - name: chained
              debug: msg="{{ greeting }}"
            - name: keys again
              debug: msg="{{ hostvars[inventory_hostname] | list }}"
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 0, result.stdout
    assert "ansible_hostname" not in results(result.stdout, "keys")["target"]["msg"]  # defined names need no facts
    assert results(result.stdout, "chained")["target"]["msg"].startswith("hi ")  # read through a variable
    assert "ansible_hostname" in results(result.stdout, "keys again")["target"]["msg"]
    lookup = run(tmp_path, inv, """
        - hosts: all
          tasks:
            - name: by key
              debug: msg="{{ hostvars[inventory_hostname]['ansible_os_family'] }}"
        """)
    assert results(lookup.stdout, "by key")["target"]["msg"] == "Debian", lookup.stdout


def test_gather_facts_false_means_no_facts(tmp_path: Path, inv: Path) -> None:
    playbook = """
        - hosts: all
          gather_facts: false
          tasks:
            - debug: msg="{{ ansible_hostname }}"
        """
    result = run(tmp_path, inv, playbook)
    assert result.returncode == 2
    assert "undefined variable 'ansible_hostname'" in result.stdout


def test_unknown_host_key_refused_then_accepted(tmp_path: Path, sshd) -> None:
    known = tmp_path / "known_hosts"
    inv = inventory(tmp_path / "hosts.yml", {"target": {**sshd.hostvars(), "glmops_known_hosts": str(known)}})
    playbook = "- hosts: all\n  tasks:\n    - command: 'true'\n"
    refused = run(tmp_path, inv, playbook)
    assert refused.returncode == 4
    assert "unknown host key" in refused.stdout and "--accept-new-host-keys" in refused.stdout
    accepted = run(tmp_path, inv, playbook, "--accept-new-host-keys")
    assert accepted.returncode == 0
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    assert run(tmp_path, inv, playbook).returncode == 0  # now known


def test_secrets_never_printed(tmp_path: Path, inv: Path) -> None:
    secret = "sk-test-0123456789abcdef"
    password = "hunter2-is-my-password"
    playbook = f"""
        - hosts: all
          vars:
            api_key: "{secret}"
          tasks:
            - name: uses key
              shell: echo "key is {{{{ api_key }}}}"; echo "{{{{ api_key }}}}" >&2
            - name: write key
              copy: {{content: "OPENAI_API_KEY={{{{ api_key }}}}\\n", dest: "{tmp_path}/.env"}}
            - name: hidden
              shell: echo {password}
              no_log: true
            - name: hidden failure
              shell: echo {password}; exit 3
              no_log: true
              ignore_errors: true
            - debug: var=api_key
        """
    for extra in (["--json"], ["-vv", "--diff"], ["-v"]):
        book = write(tmp_path / "site.yml", playbook)
        (tmp_path / ".env").unlink(missing_ok=True)
        result = glmops("run", str(book), "-i", str(inv), *extra, cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert secret not in output and password not in output
        assert "********" in output
    assert (tmp_path / ".env").read_text() == f"OPENAI_API_KEY={secret}\n"


@pytest.mark.parametrize("value", ['"; touch /tmp/glmops-pwned #', "$(touch /tmp/glmops-pwned)", "`touch /tmp/glmops-pwned`", "it's \"quoted\"\nnew line"])
def test_hostile_values_create_nothing(tmp_path: Path, inv: Path, value: str) -> None:
    Path("/tmp/glmops-pwned").unlink(missing_ok=True)
    write(tmp_path / "t.j2", "v={{ evil }}\n")
    write(tmp_path / "vars.json", json.dumps({"evil": value}))
    playbook = f"""
        - hosts: all
          tasks:
            - command: echo {{{{ evil }}}}
              ignore_errors: true  # an unbalanced quote cannot be split into words: a clean failure
            - command:
                argv: [printf, "%s", "{{{{ evil }}}}"]
              register: printed
            - assert:
                that: printed.stdout == evil
            - shell: printf %s {{{{ evil | quote }}}} > {tmp_path}/shell.out
            - copy: {{content: "{{{{ evil }}}}", dest: "{tmp_path}/copied"}}
            - template: {{src: t.j2, dest: "{tmp_path}/templated"}}
            - file: {{path: "{tmp_path}/{{{{ evil | replace('/', '_') }}}}", state: touch}}
            - lineinfile: {{path: "{tmp_path}/lines", line: "{{{{ evil }}}}", create: true}}
              when: "'\\n' not in evil"
        """
    result = run(tmp_path, inv, playbook, "-e", f"@{tmp_path}/vars.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not Path("/tmp/glmops-pwned").exists()
    assert (tmp_path / "shell.out").read_text() == value
    assert (tmp_path / "copied").read_text() == value
    assert (tmp_path / "templated").read_text() == f"v={value}\n"
    assert (tmp_path / value.replace("/", "_")).exists()
