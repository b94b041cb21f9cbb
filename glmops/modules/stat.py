"""stat: read facts about a path (never changes anything), with ansible-core's field names."""

from __future__ import annotations

import os
import shlex
import stat as st
from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")

# GNU stat first, BSD stat (macOS) second: the same 16 fields in the same order.
_GNU = "%f %u %g %U %G %s %i %d %h %b %o %t %T %.9X %.9Y %.9Z"
_BSD = "%Xp %u %g %Su %Sg %z %i %d %l %b %k %Hr %Lr %Fa %Fm %Fc"


def _digest_cmd(algorithm: str) -> str:
    """sh printing the `algorithm` digest of "$p" (GNU *sum, else BSD shasum/md5)."""
    if algorithm == "md5":
        return 'md5sum -- "$p" 2>/dev/null | cut -d" " -f1 || md5 -q -- "$p"'
    bits = algorithm[3:] if algorithm != "sha1" else "1"
    return f'{algorithm}sum -- "$p" 2>/dev/null | cut -d" " -f1 || shasum -a {bits} -- "$p" | cut -d" " -f1'


def stat_script(path: str, *, follow: bool, checksum: str | None, mime: bool) -> str:
    """One sh command printing key=value lines about `path`."""
    flag = "-L " if follow else ""
    test = '[ -e "$p" ]' if follow else '{ [ -e "$p" ] || [ -L "$p" ]; }'
    lines = [
        f"p={shlex.quote(path)}",
        f"{test} || {{ echo exists=0; exit 0; }}",
        "echo exists=1",
        f"echo \"stat=$(stat {flag}-c '{_GNU}' -- \"$p\" 2>/dev/null || stat {flag}-f '{_BSD}' -- \"$p\")\"",
        'for t in r w x; do if [ -$t "$p" ]; then echo "$t=1"; else echo "$t=0"; fi; done',
    ]
    if not follow:
        lines.append('if [ -L "$p" ]; then echo "target=$(readlink -- "$p")"; '
                     'echo "source=$(readlink -f -- "$p" 2>/dev/null || realpath -- "$p")"; fi')
    if checksum:
        not_link = "" if follow else '[ ! -L "$p" ] && '
        lines.append(f'if [ -f "$p" ] && {not_link}[ -r "$p" ]; then echo "checksum=$({_digest_cmd(checksum)})"; fi')
    if mime:
        lines.append('if command -v file >/dev/null 2>&1; then echo "mime=$(file -b --mime-type --mime-encoding -- "$p" 2>/dev/null)"; fi')
    return "\n".join(lines)


def parse_stat(path: str, stdout: str, follow: bool) -> dict[str, Any]:
    """The `stat` dictionary Ansible's stat module returns, from stat_script's output."""
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, value)
    if values.get("exists") != "1":
        return {"exists": False}
    f = values["stat"].split()
    raw = int(f[0], 16)
    mode = st.S_IMODE(raw)
    info: dict[str, Any] = {
        "exists": True, "path": path, "mode": format(mode, "04o"),
        "isdir": st.S_ISDIR(raw), "ischr": st.S_ISCHR(raw), "isblk": st.S_ISBLK(raw), "isreg": st.S_ISREG(raw),
        "isfifo": st.S_ISFIFO(raw), "islnk": st.S_ISLNK(raw), "issock": st.S_ISSOCK(raw),
        "uid": int(f[1]), "gid": int(f[2]), "pw_name": f[3], "gr_name": f[4], "size": int(f[5]),
        "inode": int(f[6]), "dev": int(f[7]), "nlink": int(f[8]), "blocks": int(f[9]), "block_size": int(f[10]),
        "device_type": os.makedev(int(f[11], 16), int(f[12], 16)),
        "atime": float(f[13]), "mtime": float(f[14]), "ctime": float(f[15]),
        "isuid": bool(mode & st.S_ISUID), "isgid": bool(mode & st.S_ISGID),
        "readable": values.get("r") == "1", "writeable": values.get("w") == "1", "executable": values.get("x") == "1",
    }
    for who, bits in (("usr", (st.S_IRUSR, st.S_IWUSR, st.S_IXUSR)), ("grp", (st.S_IRGRP, st.S_IWGRP, st.S_IXGRP)),
                      ("oth", (st.S_IROTH, st.S_IWOTH, st.S_IXOTH))):
        for letter, bit in zip("rwx", bits):
            info[letter + who] = bool(mode & bit)
    if "target" in values:
        info["lnk_target"], info["lnk_source"] = values["target"], values.get("source", "")
    if values.get("checksum"):
        info["checksum"] = values["checksum"]
    if values.get("mime"):
        mimetype, _, charset = values["mime"].partition("; charset=")
        info["mimetype"], info["charset"] = mimetype, charset
    return info


class StatModule(Module):
    name = "stat"
    doc = (
        "Read a path's state into `stat`, with ansible-core's fields: exists, path, mode ('0644'), isdir, isreg, "
        "islnk, ischr, isblk, isfifo, issock, uid, gid, pw_name, gr_name, size, inode, dev, nlink, blocks, "
        "block_size, device_type, atime, mtime, ctime (floats), rusr..xoth, isuid, isgid, readable, writeable, "
        "executable (for the connecting or become user), lnk_target and lnk_source for a link, `checksum` of a "
        "regular file (SHA-1 unless `checksum_algorithm` says otherwise, as Ansible), mimetype and charset "
        "(when the host has `file`). Not reported: attributes, attr_flags, version (lsattr)."
    )
    args = {
        "path": Arg("path", required=True, aliases=("dest", "name"), help="The path on the host."),
        "get_checksum": Arg("bool", default=True, help="Compute the checksum of a regular file."),
        "follow": Arg("bool", default=False, help="Follow a symlink: report on the file it points to."),
        "checksum_algorithm": Arg("str", default="sha1", choices=ALGORITHMS, aliases=("checksum", "checksum_algo"),
                                  help="The checksum's algorithm (Ansible's default: sha1)."),
        "get_mime": Arg("bool", default=True, aliases=("mime", "mime_type", "mime-type"),
                        help="Report mimetype and charset (needs `file` on the host)."),
        "get_attributes": Arg("bool", default=True, aliases=("attr", "attributes"),
                              help="Accepted for Ansible compatibility; attributes are not reported."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        script = stat_script(args["path"], follow=args["follow"],
                             checksum=args["checksum_algorithm"] if args["get_checksum"] else None, mime=args["get_mime"])
        done = ctx.run(script)
        if done.rc != 0:
            return ModuleResult(failed=True, msg=f"cannot stat {args['path']}: {done.stderr.strip() or done.stdout.strip()}")
        return ModuleResult(data={"stat": parse_stat(args["path"], done.stdout, args["follow"])})


MODULE = StatModule
