"""Inventory loading: the YAML format, group_vars/host_vars, precedence, sources, patterns, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write

from glmops.errors import LoadError
from glmops.inventory import load_inventory, split_pattern
from glmops.inventory_hosts import expand_host_range


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    write(tmp_path / "group_vars/all.yml", "who: all\nfrom_all: 1\n")
    write(tmp_path / "group_vars/gpu/main.yml", "who: gpu\n")
    write(tmp_path / "group_vars/gpu/more.yaml", "gpu_extra: true\n")
    write(tmp_path / "group_vars/cpu.json", json.dumps({"from_json": "cpu"}))
    write(tmp_path / "host_vars/box2.yml", "who: box2-file\n")
    write(tmp_path / "host_vars/box3", "no_extension: yes\n")
    return write(tmp_path / "hosts.yml", """
        all:
          vars: {who: inline-all, level: all}
          hosts:
            laptop:
              ansible_connection: local
          children:
            autodl:
              vars: {level: autodl}
              children:
                gpu:
                  vars: {level: gpu}
                  hosts:
                    box1: {ansible_host: 10.0.0.1, ansible_port: 2201}
                    box2:
            cpu:
              hosts:
                box3:
        """)


def test_structure_and_group_membership(inv: Path) -> None:
    inventory = load_inventory([str(inv)])
    assert list(inventory.hosts) == ["laptop", "box1", "box2", "box3"]
    assert inventory.group_names("box1") == ["autodl", "gpu"]
    assert inventory.group_names("laptop") == []
    assert inventory.groups["ungrouped"].hosts == ["laptop"]
    assert inventory.groups["gpu"].hosts == ["box1", "box2"] and inventory.groups["autodl"].children == ["gpu"]
    assert inventory.group_hosts("autodl") == ["box1", "box2"]


def test_variable_precedence_and_vars_folders(inv: Path) -> None:
    inventory = load_inventory([str(inv)])
    box1 = inventory.host_vars("box1")
    assert box1["level"] == "gpu"  # child group beats parent, parent beats all
    assert box1["who"] == "gpu"  # group_vars/gpu/ (a directory of files) beats group_vars/all.yml
    assert box1["gpu_extra"] is True and box1["from_all"] == 1 and box1["ansible_port"] == 2201
    assert inventory.host_vars("box2")["who"] == "box2-file"  # host_vars/ beat group vars
    box3 = inventory.host_vars("box3")
    assert box3["level"] == "all" and box3["from_json"] == "cpu" and box3["no_extension"] is True
    assert inventory.host_vars("laptop")["who"] == "all"  # group_vars/all.yml beats inline all vars
    assert inventory.hosts["box2"].vars == {"who": "box2-file"}  # a host's own vars


def test_same_depth_groups_apply_alphabetically(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", """
        zeta:
          vars: {v: zeta, deep: zeta}
          hosts: {h: }
        alpha:
          vars: {v: alpha, deep: alpha}
          hosts: {h: }
          children:
            inner:
              vars: {deep: inner}
              hosts: {h: }
        """)
    variables = load_inventory([str(path)]).host_vars("h")
    assert variables["v"] == "zeta"  # alpha then zeta at depth 1: the later name wins
    assert variables["deep"] == "inner"  # depth 2 beats both


def test_top_level_group_and_several_sources(tmp_path: Path) -> None:
    first = write(tmp_path / "a/hosts.yml", "web:\n  hosts:\n    w1: {ansible_port: 2201}\n")
    write(tmp_path / "a/group_vars/web.yml", "from_a: 1\n")
    second = write(tmp_path / "b/more.yml", "all:\n  children:\n    web:\n      hosts:\n        w2:\n        w1: {x: 2}\n")
    inventory = load_inventory([str(first), str(second), "adhoc1,adhoc2:2022,"])
    assert inventory.select("web") == ["w1", "w2"]
    assert inventory.host_vars("w1") == {"from_a": 1, "ansible_port": 2201, "x": 2}
    assert inventory.host_vars("adhoc2") == {"ansible_port": 2022}
    assert inventory.select("ungrouped") == ["adhoc1", "adhoc2"]
    assert inventory.sources == [str(first), str(second), "adhoc1,adhoc2:2022,"]


def test_directory_source(tmp_path: Path) -> None:
    write(tmp_path / "inv/10-gpu.yml", "gpu:\n  hosts:\n    g1:\n")
    write(tmp_path / "inv/20-cpu.yaml", "cpu:\n  hosts:\n    c1:\n")
    write(tmp_path / "inv/README.txt", "not an inventory\n")
    write(tmp_path / "inv/group_vars/gpu.yml", "cuda: true\n")
    inventory = load_inventory([str(tmp_path / "inv")])
    assert inventory.select("all") == ["g1", "c1"] and inventory.host_vars("g1") == {"cuda": True}


def test_host_ranges(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    web[01:03].lan: {ansible_user: u}\n    db-[a:b]:\n")
    inventory = load_inventory([str(path)])
    assert list(inventory.hosts) == ["web01.lan", "web02.lan", "web03.lan", "db-a", "db-b"]
    assert inventory.host_vars("web02.lan") == {"ansible_user": "u"}
    assert expand_host_range("n[0:10:5]") == ["n0", "n5", "n10"]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("all", ["laptop", "box1", "box2", "box3"]),
        ("*", ["laptop", "box1", "box2", "box3"]),
        ("autodl", ["box1", "box2"]),
        ("box3", ["box3"]),
        ("gpu:cpu", ["box1", "box2", "box3"]),
        ("cpu:gpu", ["box3", "box1", "box2"]),  # union keeps the order written
        ("gpu,cpu", ["box1", "box2", "box3"]),
        (" gpu , laptop ", ["box1", "box2", "laptop"]),
        ("all:!autodl", ["laptop", "box3"]),
        ("!autodl:all", ["laptop", "box3"]),  # exclusions apply after the plain terms, wherever written
        ("!autodl", ["laptop", "box3"]),
        ("autodl:&box2", ["box2"]),
        ("all:&gpu:!box1", ["box2"]),
        ("box*", ["box1", "box2", "box3"]),
        ("auto*", ["box1", "box2"]),  # a glob matches group names too
        ("~box[12]", ["box1", "box2"]),
        ("autodl[0]", ["box1"]),
        ("all[1:2]", ["box1", "box2"]),
        ("nothing", []),
        ("", []),
    ],
)
def test_patterns(inv: Path, pattern: str, expected: list[str]) -> None:
    assert load_inventory([str(inv)]).select(pattern) == expected


def test_pattern_splitting() -> None:
    assert split_pattern("a:b") == ["a", "b"]  # short hex-looking names are groups, not IPv6
    assert split_pattern("ab:cd:ef") == ["ab", "cd", "ef"]
    assert split_pattern("fe80::1,web:&db") == ["fe80::1", "web", "&db"]
    assert split_pattern("g[0:2]:!x") == ["g[0:2]", "!x"]


def test_adhoc_list() -> None:
    inventory = load_inventory(["h1,h2:2222,[::1]:2200,"])
    assert inventory.select("all") == ["h1", "h2", "::1"]
    assert inventory.host_vars("h2") == {"ansible_port": 2222} and inventory.host_vars("::1") == {"ansible_port": 2200}
    with pytest.raises(LoadError, match="invalid port"):
        load_inventory(["h1:port,"])


def test_implicit_localhost_is_not_in_all(tmp_path: Path) -> None:
    empty = load_inventory([])
    assert empty.select("all") == []
    assert empty.select("localhost") == ["localhost"]
    assert empty.host_vars("localhost") == {"ansible_connection": "local"}
    assert empty.group_names("localhost") == []
    assert empty.select("all") == [] and empty.select("ungrouped") == []  # still outside 'all' afterwards
    path = write(tmp_path / "hosts.yml", "all:\n  vars: {x: 1}\n  hosts:\n    localhost: {ansible_connection: ssh}\n    other:\n")
    listed = load_inventory([str(path)])
    assert listed.select("localhost") == ["localhost"] and listed.host_vars("localhost") == {"x": 1, "ansible_connection": "ssh"}
    assert listed.select("all") == ["localhost", "other"]
    assert load_inventory([str(path)]).select("127.0.0.1:other") == ["127.0.0.1", "other"]


def test_empty_file_and_empty_groups(tmp_path: Path) -> None:
    assert load_inventory([str(write(tmp_path / "empty.yml", "# nothing yet\n"))]).hosts == {}
    inventory = load_inventory([str(write(tmp_path / "h.yml", "all:\n  children:\n    gpu:\n    cpu:\n      hosts:\n"))])
    assert inventory.select("gpu") == [] and "gpu" in inventory.groups


def load_error(tmp_path: Path, text: str, name: str = "hosts.yml") -> LoadError:
    path = write(tmp_path / name, text)
    with pytest.raises(LoadError) as caught:
        load_inventory([str(path)])
    return caught.value


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        load_inventory([str(tmp_path / "nope.yml")])
    assert "inventory not found" in str(caught.value) and "nope.yml" in str(caught.value) and "-i" in caught.value.hint


def test_error_yaml_syntax(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  hosts:\n    box1:\n\tansible_host: x\n")
    assert str(error.pos).endswith("hosts.yml:4:1") and "tab" in error.message


def test_error_host_not_a_mapping(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  hosts:\n    web1: 1.2.3.4\n")
    assert (error.pos.line, error.pos.column, error.field) == (3, 5, "web1")
    assert "must be a mapping" in error.message and "ansible_host: 1.2.3.4" in error.hint


def test_error_hosts_as_list(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  children:\n    gpu:\n      hosts:\n        - box1\n")
    assert (error.pos.line, error.field) == (4, "hosts") and "not a list" in error.message


def test_error_unknown_group_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  children:\n    gpu:\n      host:\n        box1:\n")
    assert (error.pos.line, error.pos.column, error.field) == (4, 7, "host")
    assert "unknown key 'host' in group 'gpu'" in error.message and "hosts, children and vars" in error.hint


def test_error_hosts_at_top_level(tmp_path: Path) -> None:
    error = load_error(tmp_path, "hosts:\n  box1:\n")
    assert error.pos.line == 1 and "under 'all:'" in error.hint


def test_error_group_cycle(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n")
    assert "cycle" in error.message and (error.pos.line, error.field) == (7, "children")
    error = load_error(tmp_path, "web:\n  children:\n    all:\n")
    assert "'all' cannot be a child" in error.message


@pytest.mark.parametrize("port", ["abc", "'22x'", "0", "70000", "22.5", "true"])
def test_error_bad_port(tmp_path: Path, port: str) -> None:
    error = load_error(tmp_path, f"all:\n  hosts:\n    web1:\n      ansible_host: h\n      ansible_port: {port}\n")
    assert error.field == "ansible_port" and error.pos.line == 5 and "port number" in error.message


def test_port_in_vars_folder_is_checked(tmp_path: Path) -> None:
    write(tmp_path / "host_vars/web1.yml", "ansible_port: twenty\n")
    error = load_error(tmp_path, "all:\n  hosts:\n    web1:\n")
    assert error.field == "ansible_port" and "host_vars/web1.yml:1" in str(error.pos)
    assert load_inventory([str(write(tmp_path / "ok.yml", "all:\n  hosts:\n    w: {ansible_port: '2222'}\n"))]).host_vars("w")["ansible_port"] == "2222"


def test_error_group_not_a_mapping(tmp_path: Path) -> None:
    error = load_error(tmp_path, "all:\n  children:\n    gpu: [box1]\n")
    assert error.pos.line == 3 and "group 'gpu' must be a mapping" in error.message
    error = load_error(tmp_path, "- all\n")
    assert "mapping of groups" in error.message


def test_shipped_inventories_load() -> None:
    root = Path(__file__).resolve().parent.parent / "inventory"
    for path in root.glob("*.yml"):
        load_inventory([str(path)])
    autodl = load_inventory([str(root / "autodl.yml")])
    assert autodl.select("autodl")
