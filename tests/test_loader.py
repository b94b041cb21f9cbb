"""Loading playbooks into the model: keywords, short forms, roles, imports and includes."""

from __future__ import annotations

from pathlib import Path

from helpers import events, glmops, write

import glmops as glmops_package
from glmops.errors import Pos
from glmops.modules.base import ModuleContext
from glmops.playbook.loader import Loader, load_playbook, load_role, load_tasks_file, load_vars_file
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


def test_play_keywords_and_sections(tmp_path: Path) -> None:
    write(tmp_path / "vars/one.yml", "a: 1\nb: 1\n")
    write(tmp_path / "vars/two.yml", "b: 2\n")
    book = write(tmp_path / "site.yml", """
        - name: all keywords
          hosts: gpu:!broken
          vars_files: [vars/one.yml, vars/two.yml]
          become: true
          become_user: glm
          connection: local
          host_key_checking: accept-new
          tags: [deploy]
          environment: {PIP_INDEX_URL: "https://mirror/simple"}
          pre_tasks:
            - debug: msg=pre
          tasks:
            - debug: msg=main
          post_tasks:
            - debug: msg=post
        - hosts: all
          host_key_checking: no
        """)
    first, second = load_playbook(str(book)).plays
    assert first.name == "all keywords" and first.hosts == "gpu:!broken" and first.gather_facts is True
    assert first.vars_from_files == {"a": 1, "b": 2} and [Path(p).name for p in first.vars_files] == ["one.yml", "two.yml"]
    assert first.become is True and first.become_user == "glm" and first.connection == "local"
    assert first.host_key_checking == "accept-new" and first.tags == ["deploy"]
    assert first.environment == {"PIP_INDEX_URL": "https://mirror/simple"} and first.base_dir == str(tmp_path)
    assert [t.args["msg"] for t in first.pre_tasks + first.tasks + first.post_tasks] == ["pre", "main", "post"]
    assert second.host_key_checking == "no" and second.become is False and second.become_user == "root"


def test_task_keywords_block_keywords_and_args_merge(tmp_path: Path) -> None:
    book = write(tmp_path / "site.yml", """
        - hosts: all
          tasks:
            - name: blk
              when: [ready, "count > 1"]
              become: yes
              become_user: app
              vars: {x: 1}
              ignore_errors: "{{ lenient }}"
              no_log: yes
              tags: [b]
              block:
                - shell: ./start.sh
                  args: {chdir: /srv, creates: /srv/pid}
                  changed_when: false
                  failed_when: ["'ERROR' in out.stdout"]
                  register: out
                  check_mode: no
                  with_items: [[1, 2], 3]
              always:
                - ansible.builtin.file: {dest: /tmp/x, state: touch}
            - name: custom item
              debug: {var: pkg}
              loop: "{{ packages }}"
              loop_control: {loop_var: pkg, label: "{{ pkg.name }}"}
        """)
    block, looped = load_playbook(str(book)).plays[0].tasks
    assert isinstance(block, Block) and block.name == "blk" and block.when == ["ready", "count > 1"]
    assert block.become is True and block.become_user == "app" and block.vars == {"x": 1}
    assert block.ignore_errors == "{{ lenient }}" and block.no_log is True and block.tags == ["b"]
    shell = block.block[0]
    assert shell.module == "shell" and shell.args == {"cmd": "./start.sh", "chdir": "/srv", "creates": "/srv/pid"}
    assert shell.changed_when == [False] and shell.failed_when == ["'ERROR' in out.stdout"] and shell.check_mode is False
    assert shell.loop == [1, 2, 3]  # with_items flattens one level, as in Ansible
    touch = block.always[0]
    assert touch.module == "file" and touch.args == {"path": "/tmp/x", "state": "touch"}  # alias 'dest' resolved
    assert looped.loop == "{{ packages }}" and looped.loop_var == "pkg" and looped.loop_label == "{{ pkg.name }}"


def test_with_items_template_is_flattened_one_level(tmp_path: Path) -> None:
    from glmops.playbook.templating import Templar

    book = write(tmp_path / "site.yml", """
        - hosts: all
          tasks:
            - debug: msg={{ item }}
              with_items: "{{ groups_of_pkgs }}"
        """)
    task = load_playbook(str(book)).plays[0].tasks[0]
    assert Templar().render(task.loop, {"groups_of_pkgs": [["git", "curl"], "vim", None]}) == ["git", "curl", "vim"]
    assert Templar().render(task.loop, {"groups_of_pkgs": "git"}) == ["git"]


def test_role_search_order_and_shipped_roles(tmp_path: Path, monkeypatch) -> None:
    for where in ("book/roles", "cwd/roles", "extra"):
        write(tmp_path / where / "r/tasks/main.yml", f"- debug: msg={where}\n")
    write(tmp_path / "cwd/roles/only_cwd/tasks/main.yml", "- debug: msg=cwd\n")
    write(tmp_path / "extra/only_extra/tasks/main.yml", "- debug: msg=extra\n")
    book = write(tmp_path / "book/site.yml", "- hosts: all\n  roles: [r, only_cwd, only_extra]\n")
    monkeypatch.chdir(tmp_path / "cwd")
    roles = load_playbook(str(book), extra_roles_paths=[str(tmp_path / "extra")]).plays[0].roles
    assert [r.tasks[0].args["msg"] for r in roles] == ["book/roles", "cwd", "extra"]
    assert roles[0].path == str(tmp_path / "book/roles/r")
    loader = Loader(str(tmp_path / "book"), [str(tmp_path / "extra")])
    dirs = loader.role_dirs()
    assert dirs[:3] == [str(tmp_path / "book/roles"), str(tmp_path / "cwd/roles"), str(tmp_path / "extra")]
    assert dirs[-1] == str(Path(glmops_package.__file__).resolve().parent.parent / "roles")


def test_role_files_templates_and_handlers(tmp_path: Path) -> None:
    write(tmp_path / "roles/api/tasks/main.yaml", "- template: {src: api.yaml.j2, dest: /etc/api.yaml}\n  notify: restart api\n")
    write(tmp_path / "roles/api/handlers/main.yaml", "- name: restart api\n  command: systemctl restart api\n  listen: api config\n")
    write(tmp_path / "roles/api/defaults/main.yaml", "port: 6006\n")
    write(tmp_path / "roles/api/templates/api.yaml.j2", "port: {{ port }}\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          roles:
            - {role: api, when: gpu, vars: {port: 7000}}
          tasks:
            - debug: msg=x
              notify: api config
          handlers:
            - name: play handler
              debug: msg=h
        """)
    play = load_playbook(str(book)).plays[0]
    role = play.roles[0]
    assert role.defaults == {"port": 6006} and role.params == {"port": 7000} and role.when == ["gpu"]
    assert [h.name for h in play.handlers] == ["play handler", "restart api"] and play.handlers[1].role is role
    assert play.handlers[1].listen == ["api config"]
    ctx = ModuleContext(conn=None, host="h", search_paths=role.search_paths)  # type: ignore[arg-type]
    assert ctx.find_file("templates", "api.yaml.j2") == str(tmp_path / "roles/api/templates/api.yaml.j2")


def test_role_dependencies(tmp_path: Path) -> None:
    write(tmp_path / "roles/common/tasks/main.yml", "- debug: msg=common\n")
    write(tmp_path / "roles/common/handlers/main.yml", "- name: common handler\n  debug: msg=h\n")
    write(tmp_path / "roles/common/defaults/main.yml", "base: /srv\n")
    write(tmp_path / "roles/api/meta/main.yml", "galaxy_info: {author: me}\ndependencies:\n  - common\n")
    write(tmp_path / "roles/api/tasks/main.yml", "- debug: msg=api\n  notify: common handler\n")
    write(tmp_path / "roles/web/meta/main.yml", "dependencies: [{role: common}]\n")
    write(tmp_path / "roles/web/tasks/main.yml", "- debug: msg=web\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          roles:
            - {role: api, tags: [api]}
            - web
          tasks:
            - import_role: {name: api}
        """)
    play = load_playbook(str(book)).plays[0]
    # in roles:, a dependency runs first, once per play, with the tags of the role that needs it
    assert [r.name for r in play.roles] == ["common", "api", "web"]
    assert play.roles[0].tags == ["api"] and play.roles[0].defaults == {"base": "/srv"}
    assert [d.name for d in play.roles[1].dependencies] == ["common"]
    # import_role: the dependency's tasks lead the role's, as a block of the dependency role
    imported = play.tasks[0]
    dep_block = imported.block[0]
    assert isinstance(dep_block, Block) and dep_block.role is not None and dep_block.role.name == "common"
    assert dep_block.block[0].args == {"msg": "common"} and imported.block[1].args == {"msg": "api"}
    assert [h.name for h in play.handlers] == ["common handler"]
    role = load_role("api", base_dir=str(tmp_path), pos=Pos("x"))
    assert isinstance(role.tasks[0], Block) and [h.name for h in role.handlers] == ["common handler"]


def test_import_role_from_files_and_include_role_prevalidation(tmp_path: Path) -> None:
    write(tmp_path / "roles/db/tasks/main.yml", "- debug: msg=main\n")
    write(tmp_path / "roles/db/tasks/backup.yml", "- debug: msg=backup\n  notify: db done\n")
    write(tmp_path / "roles/db/vars/prod.yml", "db_size: large\n")
    write(tmp_path / "roles/db/defaults/prod.yml", "db_port: 5433\n")
    write(tmp_path / "roles/db/handlers/main.yml", "- name: db done\n  debug: msg=done\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          tasks:
            - ansible.builtin.import_role:
                name: db
                tasks_from: backup.yml
                vars_from: prod
                defaults_from: prod
              tags: [db]
              vars: {x: 1}
            - ansible.builtin.include_role: {name: db, tasks_from: backup}
              loop: [1, 2]
              loop_control: {loop_var: round}
              when: run_db
        """)
    play = load_playbook(str(book)).plays[0]
    imported, included = play.tasks
    assert isinstance(imported, Block) and imported.tags == ["db"] and imported.vars == {"x": 1}
    assert imported.role is not None and imported.role.vars == {"db_size": "large"} and imported.role.defaults == {"db_port": 5433}
    assert imported.block[0].args == {"msg": "backup"} and imported.block[0].role is imported.role
    assert isinstance(included, IncludeRole) and included.role_name == "db" and included.tasks_from == "backup"
    assert included.loop == [1, 2] and included.loop_var == "round" and included.when == ["run_db"]
    assert [h.name for h in play.handlers] == ["db done"]


def test_include_tasks_forms_and_paths(tmp_path: Path) -> None:
    write(tmp_path / "tasks/setup.yml", "- include_tasks: {file: inner.yml}\n")
    write(tmp_path / "tasks/inner.yml", "- debug: msg=inner\n")
    write(tmp_path / "roles/r/tasks/main.yml", "- include_tasks: other.yml\n- import_tasks: other.yml\n")
    write(tmp_path / "roles/r/tasks/other.yml", "- debug: msg=other\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          roles: [r]
          tasks:
            - ansible.builtin.include_tasks: tasks/setup.yml
              loop: "{{ hosts_list }}"
              vars: {a: 1}
        """)
    play = load_playbook(str(book)).plays[0]
    include = play.tasks[0]
    assert isinstance(include, IncludeTasks) and include.file == "tasks/setup.yml" and include.base_dir == str(tmp_path)
    assert include.loop == "{{ hosts_list }}" and include.vars == {"a": 1}
    role_include, role_import = play.roles[0].tasks
    assert isinstance(role_include, IncludeTasks) and role_include.base_dir == str(tmp_path / "roles/r/tasks")
    assert role_include.role is play.roles[0]
    assert isinstance(role_import, Block) and role_import.block[0].role is play.roles[0]
    # the run-time API the executor uses
    items = load_tasks_file(str(tmp_path / "tasks/setup.yml"), role=None, pos=Pos("site.yml", 4, 7))
    assert isinstance(items[0], IncludeTasks) and items[0].base_dir == str(tmp_path / "tasks")


def test_short_forms(tmp_path: Path) -> None:
    book = write(tmp_path / "site.yml", """
        - hosts: all
          tasks:
            - raw: apt-get install -y python3 executable=/bin/bash
            - command: echo chdir=/not-an-option "x=1" removes=/tmp/r
            - set_fact: a=1 b="two words" c='{{ x }}'
            - copy: content="a=b c" dest=/tmp/f
            - ansible.builtin.debug:
            - command: "{{ cmd }}"
        """)
    raw, command, set_fact, copy, debug, templated = load_playbook(str(book)).plays[0].tasks
    assert raw.args == {"cmd": "apt-get install -y python3", "executable": "/bin/bash"}
    assert command.args == {"cmd": 'echo "x=1"', "chdir": "/not-an-option", "removes": "/tmp/r"}
    assert set_fact.args == {"a": "1", "b": "two words", "c": "{{ x }}"}
    assert copy.args == {"content": "a=b c", "dest": "/tmp/f"}
    assert debug.module == "debug" and debug.args == {}
    assert templated.args == {"cmd": "{{ cmd }}"}


def test_vars_file_api(tmp_path: Path) -> None:
    path = write(tmp_path / "v.yml", "a: 1\nnested: {b: [1, 2]}\n")
    assert load_vars_file(str(path)) == {"a": 1, "nested": {"b": [1, 2]}}
    assert load_vars_file(str(write(tmp_path / "empty.yml", "# nothing\n"))) == {}
    assert load_vars_file(str(write(tmp_path / "j.json", '{"x": "y"}'))) == {"x": "y"}


def test_role_dependencies_run_in_order_with_their_variables(tmp_path: Path) -> None:
    """End to end (local connection): what the loader builds for dependencies is what runs."""
    write(tmp_path / "roles/common/defaults/main.yml", "base: /srv\n")
    write(tmp_path / "roles/common/tasks/main.yml", "- debug: msg=\"common {{ base }} {{ who }}\"\n  changed_when: true\n  notify: common handler\n")
    write(tmp_path / "roles/common/handlers/main.yml", "- name: common handler\n  debug: msg=handled\n")
    write(tmp_path / "roles/api/meta/main.yml", "dependencies:\n  - {role: common, who: api}\n")
    write(tmp_path / "roles/api/tasks/main.yml", "- debug: msg=\"api sees {{ base }}\"\n")
    book = write(tmp_path / "site.yml", """
        - hosts: localhost
          gather_facts: no
          roles: [api]
          tasks:
            - include_role: {name: api}
        """)
    result = glmops("run", str(book), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = [e["msg"] for e in events(result.stdout) if e["event"] == "host_result"]
    assert messages == ["common /srv api", "api sees /srv", "common /srv api", "api sees /srv", "handled"]


def test_roles_path_option_reaches_play_roles_and_include_role(tmp_path: Path) -> None:
    """`glmops run --roles-path DIR`: a role only found there loads, and include_role finds one there at run time."""
    write(tmp_path / "extra/listed/tasks/main.yml", "- debug: msg=listed\n")
    write(tmp_path / "more/included/tasks/main.yml", "- debug: msg=included\n")
    book = write(tmp_path / "book/site.yml", """
        - hosts: localhost
          gather_facts: no
          roles: [listed]
          tasks:
            - include_role: {name: "{{ 'included' }}"}
        """)
    env = {"GLMOPS_ROLES_PATH": "", "ANSIBLE_ROLES_PATH": ""}
    missing = glmops("run", str(book), "--json", cwd=tmp_path, env=env)
    assert missing.returncode == 3 and "role 'listed' not found" in missing.stderr
    result = glmops("run", str(book), "--json", "--roles-path", str(tmp_path / "extra") + ":" + str(tmp_path / "more"),
                    cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e["msg"] for e in events(result.stdout) if e["event"] == "host_result"] == ["listed", "included"]
