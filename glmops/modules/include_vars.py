"""include_vars: load variables from YAML/JSON files on the controller into the host's variables."""

from __future__ import annotations

import os
import re
from typing import Any

from glmops.errors import ArgumentError, GlmopsError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult
from glmops.yamlpos import load_yaml


class IncludeVarsModule(Module):
    name = "include_vars"
    doc = (
        "Load variables from a YAML or JSON `file` (free form: `include_vars: x.yml`) or from every such file "
        "in `dir` (sorted, `depth` levels; 0 = all), on the controller. A relative path is looked up in the "
        "role's vars/ and the role, then the playbook's vars/ and directory. The variables are set for the host "
        "for the rest of the run (under `name` when given); `ansible_included_var_files` lists the files read."
    )
    on_controller = True
    free_form = "file"
    result_is_code = True  # vars files on the controller are code, as in Ansible
    args = {
        "file": Arg("str", aliases=("_raw_params",), help="A vars file."),
        "dir": Arg("str", help="A directory of vars files."),
        "name": Arg("str", help="Put the variables under this one variable instead of at the top level."),
        "depth": Arg("int", default=0, help="With dir: how many levels down (0: all)."),
        "files_matching": Arg("str", help="With dir: only files whose name matches this regular expression."),
        "ignore_files": Arg("list", elements="str", default=[], help="With dir: file names (regular expressions) to skip."),
        "extensions": Arg("list", elements="str", default=["yaml", "yml", "json"], help="With dir: the extensions read."),
        "ignore_unknown_extensions": Arg("bool", default=False, help="With dir: skip files with other extensions instead of failing."),
        "hash_behaviour": Arg("str", choices=("replace", "merge"), help="merge: combine mappings with variables of the same name."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if bool(args.get("file")) == bool(args.get("dir")):
            raise ArgumentError("give exactly one of 'file' (or free-form text) and 'dir'", field="file")

    def _find(self, ctx: ModuleContext, name: str, want_dir: bool) -> str:
        if os.path.isabs(name):
            candidates = [name]
        else:
            candidates = [os.path.join(base, sub, name) for base in ctx.search_paths for sub in ("vars", "")]
        for candidate in candidates:
            if os.path.isdir(candidate) if want_dir else os.path.isfile(candidate):
                return candidate
        raise ArgumentError(f"could not find {'directory' if want_dir else 'vars file'} '{name}'", pos=ctx.pos,
                            field="dir" if want_dir else "file", hint="looked in: " + ", ".join(candidates))

    def _files(self, root: str, args: dict[str, Any]) -> tuple[list[str], str | None]:
        files: list[str] = []
        extensions = [e.lstrip(".") for e in args["extensions"]]
        for here, subdirs, names in os.walk(root):
            subdirs.sort()
            level = here[len(root):].count(os.sep) + 1
            if args["depth"] and level > args["depth"]:
                subdirs[:] = []
                continue
            for filename in sorted(names):
                if any(re.search(p, filename) for p in args["ignore_files"]):
                    continue
                if args.get("files_matching") and not re.search(args["files_matching"], filename):
                    continue
                if filename.rsplit(".", 1)[-1] not in extensions or "." not in filename:
                    if args["ignore_unknown_extensions"]:
                        continue
                    return files, f"{os.path.join(here, filename)} does not have a valid extension: {', '.join(extensions)}"
                files.append(os.path.join(here, filename))
        return files, None

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        if args.get("file"):
            files, problem = [self._find(ctx, args["file"], False)], None
        else:
            files, problem = self._files(self._find(ctx, args["dir"], True), args)
        merged: dict[str, Any] = {}
        for path in files:
            try:
                data = load_yaml(path)
            except GlmopsError as exc:
                return ModuleResult(failed=True, msg=str(exc))
            if data is None:
                continue
            if not isinstance(data, dict):
                return ModuleResult(failed=True, msg=f"{path}: a vars file must be a mapping of names to values")
            if args.get("hash_behaviour") == "merge":
                for key, value in data.items():
                    merged[key] = {**merged[key], **value} if isinstance(merged.get(key), dict) and isinstance(value, dict) else value
            else:
                merged.update(data)
        facts = {args["name"]: merged} if args.get("name") else merged
        data_out = {"ansible_included_var_files": [os.path.abspath(p) for p in files], "ansible_facts": facts}
        if problem:
            return ModuleResult(failed=True, msg=problem, data={**data_out, "ansible_facts": {}})
        return ModuleResult(facts=facts, data=data_out)


MODULE = IncludeVarsModule
