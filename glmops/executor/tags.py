"""--tags / --skip-tags selection with Ansible's special tags (always, never, tagged, untagged, all)."""

from __future__ import annotations

from collections.abc import Iterable


class TagFilter:
    """Decides whether a task with the given (inherited + own) tags runs."""

    def __init__(self, only: Iterable[str] = (), skip: Iterable[str] = ()):
        self.only = {t.strip() for tag in only for t in tag.split(",") if t.strip()}
        self.skip = {t.strip() for tag in skip for t in tag.split(",") if t.strip()}

    @staticmethod
    def _matches(selector: set[str], tags: set[str]) -> bool:
        return bool(
            selector & tags
            or ("tagged" in selector and tags)
            or ("untagged" in selector and not tags)
        )

    def selected(self, tags: set[str]) -> bool:
        if self.only:
            run = self._matches(self.only, tags) or ("all" in self.only and "never" not in tags)
            run = run or ("always" in tags and "always" not in self.skip)
        else:
            run = "never" not in tags
        if self.skip and self._matches(self.skip, tags):
            run = False
        return run
