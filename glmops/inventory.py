"""Ansible-style YAML inventory: groups, hosts, vars, group_vars/ and host_vars/, host patterns."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.playbook.yamlpos import PosDict, load_yaml

GROUP_KEYS = {"hosts", "children", "vars"}
IMPLICIT_LOCALHOST = {"ansible_connection": "local"}


@dataclass
class Host:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)


class Inventory:
    """Hosts and groups, in the order they were written."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped", parents=["all"])}
        self.groups["all"].children.append("ungrouped")
        self.sources: list[str] = []

    # -- building ---------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def add_host(self, name: str, group: str | None = None, variables: dict[str, Any] | None = None) -> Host:
        host = self.hosts.setdefault(name, Host(name))
        host.vars.update(variables or {})
        if group and group not in ("all",):
            grp = self.group(group)
            if name not in grp.hosts:
                grp.hosts.append(name)
        return host

    def link(self, parent: str, child: str, pos: Pos) -> None:
        if parent == child or parent in self._descendants(child):
            raise LoadError(f"group '{child}' is its own ancestor (a cycle through '{parent}')", pos=pos, field="children")
        p, c = self.group(parent), self.group(child)
        if child not in p.children:
            p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)

    def _descendants(self, name: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.groups.get(name, Group(name)).children)
        while stack:
            child = stack.pop()
            if child not in out:
                out.add(child)
                stack.extend(self.groups.get(child, Group(child)).children)
        return out

    def finish(self) -> None:
        """Compute every host's groups, and put hosts without a group into 'ungrouped'."""
        for host in self.hosts.values():
            host.groups = []
        for group in self.groups.values():
            if group.name in ("all", "ungrouped"):
                continue
            if not group.parents:
                group.parents.append("all")
                if group.name not in self.groups["all"].children:
                    self.groups["all"].children.append(group.name)
            for host_name in self.group_hosts(group.name):
                if group.name not in self.hosts[host_name].groups:
                    self.hosts[host_name].groups.append(group.name)
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts.values():
            if not host.groups and host.name not in ungrouped.hosts:
                ungrouped.hosts.append(host.name)
            if host.name in ungrouped.hosts and "ungrouped" not in host.groups:
                host.groups.append("ungrouped")

    # -- queries ----------------------------------------------------------------------------
    def group_hosts(self, name: str) -> list[str]:
        """Hosts of a group and of all its descendants, in inventory order."""
        if name == "all":
            return list(self.hosts)
        members = set(self.groups[name].hosts)
        for child in self._descendants(name):
            members.update(self.groups[child].hosts)
        return [h for h in self.hosts if h in members]

    def group_names(self, name: str) -> list[str]:
        return [g for g in self.hosts[name].groups if g not in ("all", "ungrouped")]

    def _depth(self, name: str) -> int:
        group = self.groups[name]
        return 0 if name == "all" else 1 + max((self._depth(p) for p in group.parents), default=0)

    def host_vars(self, name: str) -> dict[str, Any]:
        """A host's inventory variables: 'all', then its groups from parents to children, then the host's own."""
        host = self.hosts[name]
        ancestors: set[str] = set()
        stack = list(host.groups)
        while stack:
            group = stack.pop()
            if group not in ancestors:
                ancestors.add(group)
                stack.extend(self.groups[group].parents)
        ancestors.discard("all")
        merged = dict(self.groups["all"].vars)
        for group in sorted(ancestors, key=lambda g: (self._depth(g), g)):
            merged.update(self.groups[group].vars)
        merged.update(host.vars)
        return merged

    def select(self, pattern: str) -> list[str]:
        """Hosts matching an Ansible host pattern: names, groups, globs, ':' or ',' unions, '&' and '!'."""
        pattern = pattern.strip()
        if not pattern:
            return []
        terms = [t for t in re.split(r"[:,]", pattern) if t.strip()] if not re.match(r"^\[?[0-9a-fA-F:]+\]?$", pattern) else [pattern]
        selected: list[str] = []
        for term in terms:
            term = term.strip()
            if term.startswith("&"):
                keep = set(self._term(term[1:]))
                selected = [h for h in selected if h in keep]
            elif term.startswith("!"):
                drop = set(self._term(term[1:]))
                selected = [h for h in selected if h not in drop]
            else:
                for host in self._term(term):
                    if host not in selected:
                        selected.append(host)
        return selected

    def _term(self, term: str) -> list[str]:
        if term in ("all", "*"):
            return list(self.hosts)
        if term in self.groups:
            return self.group_hosts(term)
        if term in self.hosts:
            return [term]
        if term == "localhost" or term == "127.0.0.1":
            self.add_host(term, variables=dict(IMPLICIT_LOCALHOST))
            self.finish()
            return [term]
        if any(c in term for c in "*?["):
            out = [h for h in self.hosts if fnmatch.fnmatchcase(h, term)]
            for group in self.groups:
                if fnmatch.fnmatchcase(group, term):
                    out.extend(h for h in self.group_hosts(group) if h not in out)
            return [h for h in self.hosts if h in out]
        if term.startswith("~"):
            regex = re.compile(term[1:])
            return [h for h in self.hosts if regex.search(h)]
        return []


# -- loading ----------------------------------------------------------------------------------
def _vars_dir(base: str, kind: str, name: str) -> dict[str, Any]:
    """Variables from group_vars/NAME(.yml|.yaml|.json) or every file in group_vars/NAME/."""
    from glmops.playbook.loader import load_vars_file

    merged: dict[str, Any] = {}
    root = os.path.join(base, kind)
    for ext in ("", ".yml", ".yaml", ".json"):
        path = os.path.join(root, name + ext)
        if os.path.isfile(path):
            merged.update(load_vars_file(path))
        elif ext == "" and os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                if entry.endswith((".yml", ".yaml", ".json")):
                    merged.update(load_vars_file(os.path.join(path, entry)))
    return merged


def _check_port(name: str, variables: dict[str, Any], pos: Pos) -> None:
    port = variables.get("ansible_port")
    if port is None or (isinstance(port, str) and "{{" in port):
        return
    try:
        if isinstance(port, bool) or not 0 < int(port) < 65536:
            raise ValueError
    except (TypeError, ValueError):
        raise LoadError(f"host {name}: ansible_port must be a port number, got {port!r}", pos=pos, field="ansible_port") from None


def _load_group(inventory: Inventory, name: str, node: Any, path: str, pos: Pos) -> None:
    group = inventory.group(name)
    if node is None:
        return
    if not isinstance(node, dict):
        raise LoadError(f"group '{name}' must be a mapping with hosts, children and vars", pos=pos, field=name)
    for key in node:
        if key not in GROUP_KEYS:
            raise LoadError(f"unknown key '{key}' in group '{name}'", pos=node.pos_of(key) if isinstance(node, PosDict) else pos, field=str(key),
                            hint="a group has only hosts, children and vars; put a child group under 'children:'")
    variables = node.get("vars") or {}
    if not isinstance(variables, dict):
        raise LoadError(f"vars of group '{name}' must be a mapping", pos=node.pos_of("vars"), field="vars")
    group.vars.update(variables)
    hosts = node.get("hosts") or {}
    if isinstance(hosts, list):
        raise LoadError(f"hosts of group '{name}' must be a mapping (host: vars), not a list", pos=node.pos_of("hosts"), field="hosts",
                        hint="write each host as 'NAME:' on its own line, with its vars indented below it")
    if not isinstance(hosts, dict):
        raise LoadError(f"hosts of group '{name}' must be a mapping", pos=node.pos_of("hosts"), field="hosts")
    for host_name, host_vars in hosts.items():
        host_pos = hosts.pos_of(host_name) if isinstance(hosts, PosDict) else pos
        if host_vars is None:
            host_vars = {}
        if not isinstance(host_vars, dict):
            raise LoadError(f"host '{host_name}' must be a mapping of variables (or empty), got {host_vars!r}", pos=host_pos, field=str(host_name),
                            hint="e.g.  myhost:\n        ansible_host: 1.2.3.4")
        _check_port(str(host_name), host_vars, host_pos)
        inventory.add_host(str(host_name), None if name == "all" else name, dict(host_vars))
    children = node.get("children") or {}
    if not isinstance(children, dict):
        raise LoadError(f"children of group '{name}' must be a mapping of groups", pos=node.pos_of("children"), field="children")
    for child, child_node in children.items():
        child_pos = children.pos_of(child) if isinstance(children, PosDict) else pos
        inventory.link(name, str(child), child_pos)
        _load_group(inventory, str(child), child_node, path, child_pos)


def _load_file(inventory: Inventory, path: str) -> None:
    data = load_yaml(path)
    if data is None:
        return
    if not isinstance(data, dict):
        raise LoadError("an inventory must be a mapping of groups (start with 'all:')", pos=getattr(data, "pos", Pos(path)),
                        hint="see docs/inventory.md for the format")
    for name, node in data.items():
        _load_group(inventory, str(name), node, path, data.pos_of(name))


def load_inventory(sources: list[str] | tuple[str, ...] = ()) -> Inventory:
    """Load inventory files, directories of them, or ad-hoc 'host1,host2,' lists."""
    inventory = Inventory()
    var_dirs: list[str] = []
    for source in sources:
        if "," in source and not os.path.exists(source):
            for item in (s.strip() for s in source.split(",")):
                if item:
                    host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
                    variables = {"ansible_port": int(port)} if port.isdigit() else {}
                    inventory.add_host(host or item, variables=variables)
            continue
        if os.path.isdir(source):
            files = sorted(f for f in os.listdir(source) if f.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(source, f)))
            for entry in files:
                _load_file(inventory, os.path.join(source, entry))
            var_dirs.append(source)
        elif os.path.isfile(source):
            _load_file(inventory, source)
            var_dirs.append(os.path.dirname(os.path.abspath(source)))
        else:
            raise LoadError("inventory not found", pos=Pos(source), hint="give an inventory file or directory with -i, or a list like -i host1,host2,")
        inventory.sources.append(source)
    inventory.finish()
    for base in var_dirs:
        for name, group in inventory.groups.items():
            group.vars.update(_vars_dir(base, "group_vars", name))
        for name, host in inventory.hosts.items():
            host.vars.update(_vars_dir(base, "host_vars", name))
    return inventory
