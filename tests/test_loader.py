"""Loading playbooks into the model: keywords, short forms, roles, imports and includes."""

from __future__ import annotations

from pathlib import Path

from helpers import write

from glmops.playbook.loader import load_playbook
from glmops.playbook.model import Block, IncludeRole, IncludeTasks, Task


def test_keywords_land_in_the_model(tmp_path: Path) -> None:
    book = write(tmp_path / "site.yml", """
        - name: deploy
          hosts: [gpu, cpu]
          gather_facts: no
          become: yes
          environment: {HF_HUB_OFFLINE: "1"}
          vars: {a: 1}
          tasks:
            - name: run it
              ansible.builtin.command: python3 serve.py --port 6006 chdir=/srv creates=/srv/pid
              register: out
              when: a == 1
              tags: serve, api
              notify: restart
              environment: {X: y}
              retries: 3
              delay: 2
              until: out.rc == 0
              no_log: true
              loop: [1, 2]
              loop_control: {loop_var: n, index_var: i, label: "{{ n }}"}
          handlers:
            - name: restart
              listen: [api changed]
              debug: msg=x
        """)
    play = load_playbook(str(book)).plays[0]
    assert play.hosts == "gpu:cpu" and play.gather_facts is False and play.become is True
    task = play.tasks[0]
    assert isinstance(task, Task) and task.module == "command"
    assert task.args == {"cmd": "python3 serve.py --port 6006", "chdir": "/srv", "creates": "/srv/pid"}
    assert task.register == "out" and task.when == ["a == 1"] and task.tags == ["serve", "api"]
    assert task.notify == ["restart"] and task.environment == {"X": "y"} and task.retries == 3 and task.until == ["out.rc == 0"]
    assert task.no_log is True and task.loop == [1, 2] and task.loop_var == "n" and task.index_var == "i"
    assert task.pos.line == 8 and task.pos.file.endswith("site.yml")
    assert play.handlers[0].listen == ["api changed"]


def test_short_form_with_templates_and_quotes(tmp_path: Path) -> None:
    book = write(tmp_path / "site.yml", """
        - hosts: all
          tasks:
            - file: path={{ base }}/models state=directory mode="0755"
            - shell: echo "a b" | tr a-z A-Z > /tmp/out chdir=/tmp
            - command: [ls, -l]
        """)
    tasks = load_playbook(str(book)).plays[0].tasks
    assert tasks[0].args == {"path": "{{ base }}/models", "state": "directory", "mode": "0755"}
    assert tasks[1].args == {"cmd": 'echo "a b" | tr a-z A-Z > /tmp/out', "chdir": "/tmp"}
    assert tasks[2].args == {"argv": ["ls", "-l"]}


def test_roles_imports_and_includes(tmp_path: Path) -> None:
    write(tmp_path / "roles/api/defaults/main.yml", "port: 6006\n")
    write(tmp_path / "roles/api/vars/main.yml", "name: api\n")
    write(tmp_path / "roles/api/tasks/main.yml", "- import_tasks: install.yml\n- template: {src: conf.j2, dest: /tmp/c}\n  notify: reload\n")
    write(tmp_path / "roles/api/tasks/install.yml", "- debug: msg=install\n")
    write(tmp_path / "roles/api/handlers/main.yml", "- name: reload\n  debug: msg=reload\n")
    write(tmp_path / "extra.yml", "- debug: msg=extra\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          roles:
            - role: api
              port: 7000
              tags: [api]
          tasks:
            - import_tasks: extra.yml
              when: x
            - include_tasks: "{{ which }}.yml"
            - include_role: {name: api, tasks_from: install}
            - block:
                - debug: msg=in
              rescue:
                - debug: msg=rescue
        """)
    play = load_playbook(str(book)).plays[0]
    role = play.roles[0]
    assert role.name == "api" and role.defaults == {"port": 6006} and role.vars == {"name": "api"} and role.params == {"port": 7000}
    assert role.tags == ["api"] and isinstance(role.tasks[0], Block) and role.tasks[0].block[0].args == {"msg": "install"}
    assert role.tasks[1].role is role
    assert [h.name for h in play.handlers] == ["reload"]
    imported, included, include_role, block = play.tasks
    assert isinstance(imported, Block) and imported.when == ["x"] and imported.block[0].args == {"msg": "extra"}
    assert isinstance(included, IncludeTasks) and included.file == "{{ which }}.yml"
    assert isinstance(include_role, IncludeRole) and include_role.tasks_from == "install"
    assert isinstance(block, Block) and len(block.rescue) == 1


def test_import_playbook(tmp_path: Path) -> None:
    write(tmp_path / "other.yml", "- hosts: db\n  tasks: []\n")
    book = write(tmp_path / "site.yml", "- import_playbook: other.yml\n- hosts: web\n  tasks: []\n")
    assert [p.hosts for p in load_playbook(str(book)).plays] == ["db", "web"]
