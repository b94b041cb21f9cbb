"""Ansible-style YAML (and INI, inventory_ini.py) inventory: groups, hosts, vars, group_vars/ and host_vars/, host patterns.

    inventory = load_inventory(["inventory/hosts.yml"])     # files, directories, or "h1,h2:2222,"
    inventory.select("gpu:!broken")                         # host names
    inventory.host_vars("box1")                             # group vars ('all' first), then host vars
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import LoadError, Pos
from glmops.inventory_hosts import check_port, expand_host_range
from glmops.inventory_ini import load_ini, looks_like_ini
from glmops.yamlpos import PosDict, load_yaml

GROUP_KEYS = ("hosts", "children", "vars")
IMPLICIT_LOCALHOST = {"ansible_connection": "local"}
LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")
INVENTORY_EXTENSIONS = (".yml", ".yaml", ".json", ".ini")
FORMAT_HINT = "see docs/inventory.md for the format"

_IPV6_CHARS = re.compile(r"^\[?[0-9a-fA-F:.]+\]?$")
_SUBSCRIPT = re.compile(r"^(?P<name>.+?)\[(?:(?P<index>-?\d+)|(?P<start>-?\d+)?\s*:\s*(?P<end>-?\d+)?)\]$")


@dataclass
class Host:
    """A host: its own variables (inline and host_vars/) and the groups it belongs to."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class Group:
    """A group: its variables (inline and group_vars/), its direct hosts and child groups."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)


class Inventory:
    """Hosts and groups, in the order they were written. 'all' and 'ungrouped' always exist."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped", parents=["all"])}
        self.groups["all"].children.append("ungrouped")
        self.sources: list[str] = []
        self.implicit: set[str] = set()  # hosts that exist only because a pattern named localhost

    # -- building ---------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        """The group called `name`, created when missing."""
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def add_host(self, name: str, group: str | None = None, variables: dict[str, Any] | None = None) -> Host:
        """Add (or extend) a host; `group` None or 'all' leaves it for 'ungrouped'."""
        host = self.hosts.setdefault(name, Host(name))
        self.implicit.discard(name)
        host.vars.update(variables or {})
        if group and group != "all":
            grp = self.group(group)
            if name not in grp.hosts:
                grp.hosts.append(name)
        return host

    def link(self, parent: str, child: str, pos: Pos) -> None:
        """Make `child` a child group of `parent`; a cycle is a LoadError."""
        if child == "all":
            raise LoadError(f"group 'all' cannot be a child of '{parent}'", pos=pos, field="children",
                            hint="'all' contains every group already; remove it from 'children'")
        if parent == child or parent in self._descendants(child):
            raise LoadError(f"group '{child}' is its own ancestor (a cycle through '{parent}')", pos=pos, field="children",
                            hint="a group cannot contain itself, directly or through its children")
        p, c = self.group(parent), self.group(child)
        if child not in p.children:
            p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)

    def _descendants(self, name: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.groups[name].children) if name in self.groups else []
        while stack:
            child = stack.pop()
            if child not in out:
                out.add(child)
                stack.extend(self.groups[child].children if child in self.groups else [])
        return out

    def finish(self) -> None:
        """Compute every host's groups, and put hosts without a group into 'ungrouped'."""
        everyone = self.groups["all"]
        for host in self.hosts.values():
            host.groups = []
        for group in self.groups.values():
            if group.name in ("all", "ungrouped"):
                continue
            if not group.parents:
                group.parents.append("all")
            if "all" in group.parents and group.name not in everyone.children:
                everyone.children.append(group.name)
            for host_name in self.group_hosts(group.name):
                if group.name not in self.hosts[host_name].groups:
                    self.hosts[host_name].groups.append(group.name)
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts.values():
            if host.name in self.implicit:
                continue
            if not host.groups and host.name not in ungrouped.hosts:
                ungrouped.hosts.append(host.name)
            if host.name in ungrouped.hosts and "ungrouped" not in host.groups:
                host.groups.append("ungrouped")
        self._depths: dict[str, int] = {}

    # -- queries ----------------------------------------------------------------------------
    def group_hosts(self, name: str) -> list[str]:
        """Hosts of a group and of all its descendants, in inventory order (implicit localhost never)."""
        if name == "all":
            return [h for h in self.hosts if h not in self.implicit]
        members = set(self.groups[name].hosts)
        for child in self._descendants(name):
            members.update(self.groups[child].hosts)
        return [h for h in self.hosts if h in members and h not in self.implicit]

    def group_names(self, name: str) -> list[str]:
        """The groups of a host, without 'all' and 'ungrouped' (Ansible's group_names)."""
        return [g for g in self.hosts[name].groups if g not in ("all", "ungrouped")]

    def _depth(self, name: str) -> int:
        depths = self.__dict__.setdefault("_depths", {})
        if name not in depths:
            parents = self.groups[name].parents
            depths[name] = 0 if name == "all" else 1 + max((self._depth(p) for p in parents), default=0)
        return depths[name]

    def host_vars(self, name: str) -> dict[str, Any]:
        """A host's inventory variables: 'all', then its groups by depth (parents before children,
        alphabetical at the same depth), then the host's own variables."""
        host = self.hosts[name]
        ancestors: set[str] = set()
        stack = list(host.groups)
        while stack:
            group = stack.pop()
            if group not in ancestors:
                ancestors.add(group)
                stack.extend(self.groups[group].parents)
        ancestors.discard("all")
        merged = {} if name in self.implicit else dict(self.groups["all"].vars)
        for group in sorted(ancestors, key=lambda g: (self._depth(g), g)):
            merged.update(self.groups[group].vars)
        merged.update(host.vars)
        return merged

    def select(self, pattern: str) -> list[str]:
        """Host names matching an Ansible host pattern.

        Terms are separated by ':' or ','; plain terms (all, *, a host, a group, a glob, ~regex,
        group[0], group[1:3]) are joined in the order written, then '&term' intersects and '!term'
        excludes, as Ansible does. An empty pattern matches nothing.
        """
        terms = split_pattern(pattern)
        plain = [t for t in terms if not t.startswith(("&", "!"))]
        intersect = [t[1:] for t in terms if t.startswith("&")]
        exclude = [t[1:] for t in terms if t.startswith("!")]
        if not terms:
            return []
        if not plain:
            plain = ["all"]
        selected: list[str] = []
        for term in plain:
            for host in self._term(term):
                if host not in selected:
                    selected.append(host)
        for term in intersect:
            keep = set(self._term(term))
            selected = [h for h in selected if h in keep]
        for term in exclude:
            drop = set(self._term(term))
            selected = [h for h in selected if h not in drop]
        return selected

    def _term(self, term: str) -> list[str]:
        match = _SUBSCRIPT.match(term)
        if match and not term.startswith("~") and term not in self.groups and term not in self.hosts:
            hosts = self._term(match["name"])
            if match["index"] is not None:
                index = int(match["index"])
                return [hosts[index]] if -len(hosts) <= index < len(hosts) else []
            start = int(match["start"]) if match["start"] else 0
            end = int(match["end"]) + 1 if match["end"] else len(hosts)  # Ansible's slices include the end
            return hosts[start:end]
        if term in ("all", "*"):
            return self.group_hosts("all")
        if term.startswith("~"):
            regex = re.compile(term[1:])
            return [h for h in self.hosts if h not in self.implicit and regex.match(h)]
        if term in self.groups:
            return self.group_hosts(term)
        if term in self.hosts:
            return [term]
        if term in LOCALHOST_NAMES:
            self.hosts[term] = Host(term, dict(IMPLICIT_LOCALHOST))
            self.implicit.add(term)
            return [term]
        if any(c in term for c in "*?["):
            out = {h for h in self.hosts if fnmatch.fnmatchcase(h, term)}
            for group in self.groups:
                if fnmatch.fnmatchcase(group, term):
                    out.update(self.group_hosts(group))
            return [h for h in self.hosts if h in out and h not in self.implicit]
        return []


def _is_ipv6(text: str) -> bool:
    """An IPv6 address has '::' or exactly eight groups; 'a:b' or 'ab:cd:ef' are group patterns."""
    return bool(_IPV6_CHARS.match(text)) and ("::" in text or text.count(":") == 7)


def split_pattern(pattern: str) -> list[str]:
    """Split a host pattern into terms on ',' and on ':' (outside brackets; IPv6 addresses kept)."""
    terms: list[str] = []
    for piece in (p.strip() for p in (pattern or "").split(",")):
        if not piece:
            continue
        if _is_ipv6(piece.lstrip("&!")):
            terms.append(piece)
            continue
        depth, current = 0, ""
        for char in piece:
            if char == "[":
                depth += 1
            elif char == "]":
                depth = max(0, depth - 1)
            if char == ":" and depth == 0:
                terms.append(current.strip())
                current = ""
            else:
                current += char
        terms.append(current.strip())
    return [t for t in terms if t and t not in ("&", "!")]


# -- loading ----------------------------------------------------------------------------------
def _vars_dir(base: str, kind: str, name: str) -> dict[str, Any]:
    """Variables from KIND/NAME, KIND/NAME.yml|.yaml|.json, or every such file in a KIND/NAME/ directory."""
    from glmops.playbook.loader import load_vars_file

    merged: dict[str, Any] = {}
    root = os.path.join(base, kind)
    if not os.path.isdir(root):
        return merged
    for ext in ("", ".yml", ".yaml", ".json"):
        path = os.path.join(root, name + ext)
        if os.path.isfile(path):
            paths = [path]
        elif ext == "" and os.path.isdir(path):
            paths = [os.path.join(path, e) for e in sorted(os.listdir(path)) if e.endswith(INVENTORY_EXTENSIONS)]
        else:
            continue
        for item in paths:
            data = load_vars_file(item)
            check_port(f"{kind} of {name}", data, Pos(item))
            merged.update(data)
    return merged


def _load_group(inventory: Inventory, name: str, node: Any, pos: Pos) -> None:
    group = inventory.group(name)
    if node is None:
        return
    if not isinstance(node, dict):
        raise LoadError(f"group '{name}' must be a mapping with hosts, children and vars, got {node!r}", pos=pos, field=name,
                        hint=f"e.g.  {name}:\n          hosts:\n            myhost:")
    for key in node:
        if key not in GROUP_KEYS:
            raise LoadError(f"unknown key '{key}' in group '{name}'", pos=node.pos_of(key) if isinstance(node, PosDict) else pos,
                            field=str(key), hint="a group has only hosts, children and vars; put a host under 'hosts:' "
                            "and a child group under 'children:'")
    key_pos = node.pos_of if isinstance(node, PosDict) else (lambda _key: pos)
    variables = node.get("vars") or {}
    if not isinstance(variables, dict):
        raise LoadError(f"vars of group '{name}' must be a mapping", pos=key_pos("vars"), field="vars",
                        hint="write one 'name: value' per line under 'vars:'")
    check_port(f"group {name}", variables, key_pos("vars"))
    group.vars.update(variables)
    hosts = node.get("hosts") or {}
    if not isinstance(hosts, dict):
        kind = "list" if isinstance(hosts, list) else f"value {hosts!r}"
        raise LoadError(f"hosts of group '{name}' must be a mapping (host: vars), not a {kind}",
                        pos=key_pos("hosts"), field="hosts",
                        hint="write each host as 'NAME:' on its own line, with its vars indented below it")
    for host_name, host_vars in hosts.items():
        host_pos = hosts.pos_of(host_name) if isinstance(hosts, PosDict) else pos
        if host_vars is None:
            host_vars = {}
        if not isinstance(host_vars, dict):
            raise LoadError(f"host '{host_name}' must be a mapping of variables (or empty), got {host_vars!r}", pos=host_pos,
                            field=str(host_name), hint=f"e.g.  {host_name}:\n          ansible_host: {host_vars}")
        for key in host_vars:
            if not isinstance(key, str):
                raise LoadError(f"host '{host_name}': variable name {key!r} is not a string",
                                pos=host_vars.pos_of(key) if isinstance(host_vars, PosDict) else host_pos, field=str(key))
        check_port(f"host {host_name}", host_vars, host_pos)
        for expanded in expand_host_range(str(host_name)):
            inventory.add_host(expanded, None if name == "all" else name, dict(host_vars))
    children = node.get("children") or {}
    if not isinstance(children, dict):
        raise LoadError(f"children of group '{name}' must be a mapping of groups", pos=key_pos("children"), field="children",
                        hint="write each child group as 'NAME:' on its own line")
    for child, child_node in children.items():
        child_pos = children.pos_of(child) if isinstance(children, PosDict) else pos
        inventory.link(name, str(child), child_pos)
        _load_group(inventory, str(child), child_node, child_pos)


def _load_file(inventory: Inventory, path: str) -> None:
    if not path.endswith((".yml", ".yaml", ".json")):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadError(f"cannot read inventory: {exc}", pos=Pos(path)) from None
        if path.endswith(".ini") or looks_like_ini(text):
            load_ini(inventory, text, path)
            return
    data = load_yaml(path)
    if data is None:
        return
    if not isinstance(data, dict):
        raise LoadError("an inventory must be a mapping of groups (start with 'all:')", pos=getattr(data, "pos", Pos(path)),
                        hint=FORMAT_HINT)
    for name, node in data.items():
        if name in GROUP_KEYS and isinstance(node, dict) and name != "all":
            raise LoadError(f"'{name}' at the top level of an inventory", pos=data.pos_of(name), field=str(name),
                            hint=f"the top level holds groups: put '{name}:' under 'all:' (indented)")
        _load_group(inventory, str(name), node, data.pos_of(name))


def _load_adhoc(inventory: Inventory, source: str) -> None:
    """'host1,host2:2222,' -> hosts (a port after one ':'; IPv6 addresses kept whole)."""
    for item in (s.strip() for s in source.split(",")):
        if not item:
            continue
        host, port = item, ""
        if item.startswith("[") and "]:" in item:
            host, _, port = item[1:].partition("]:")
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        variables: dict[str, Any] = {}
        if port:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise LoadError(f"invalid port in '{item}'", pos=Pos(source), field="-i", hint="write host:PORT, e.g. -i box1:2222,")
            variables["ansible_port"] = int(port)
        inventory.add_host(host, variables=variables)


def load_inventory(sources: list[str] | tuple[str, ...] = ()) -> Inventory:
    """Load inventory files, directories of them, or ad-hoc 'host1,host2,' lists, merged in order.

    With no source the inventory is empty (a pattern naming localhost still finds it).
    """
    inventory = Inventory()
    var_dirs: list[str] = []
    for source in sources:
        if "," in source and not os.path.exists(source):
            _load_adhoc(inventory, source)
        elif os.path.isdir(source):
            files = sorted(f for f in os.listdir(source) if f.endswith(INVENTORY_EXTENSIONS) and os.path.isfile(os.path.join(source, f)))
            for entry in files:
                _load_file(inventory, os.path.join(source, entry))
            var_dirs.append(source)
        elif os.path.isfile(source):
            _load_file(inventory, source)
            var_dirs.append(os.path.dirname(os.path.abspath(source)))
        else:
            raise LoadError("inventory not found", pos=Pos(source),
                            hint="give an inventory file or directory with -i, or a list like -i host1,host2:2222, (note the comma)")
        inventory.sources.append(source)
    inventory.finish()
    for base in dict.fromkeys(var_dirs):
        for name, group in inventory.groups.items():
            group.vars.update(_vars_dir(base, "group_vars", name))
        for name, host in inventory.hosts.items():
            host.vars.update(_vars_dir(base, "host_vars", name))
    return inventory
