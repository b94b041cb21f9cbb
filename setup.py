"""Build hook: the wheel carries the deployment content (playbooks/, roles/, templates/, inventory/) as
package data under glmops/_content/, so `pip install glmops` is the whole product (glmops/shipped.py).

The content is copied into the build folder only: the source tree never holds a glmops/_content, and an
editable install (`pip install -e .`) keeps using the checkout's own folders. MANIFEST.in puts the same
folders into the sdist, so a wheel built from the sdist carries them too. Everything else is in
pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONTENT_DIRS = ("playbooks", "roles", "templates", "inventory")  # glmops/shipped.py: CONTENT_DIRS
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


class build_py_with_content(build_py):  # noqa: N801 - setuptools command class naming
    """build_py that also copies the content folders into BUILD_LIB/glmops/_content."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable: glmops/shipped.py finds the checkout's folders
        target = Path(self.build_lib) / "glmops" / "_content"
        missing = [name for name in CONTENT_DIRS if not (ROOT / name).is_dir()]
        if missing:
            raise SystemExit(f"cannot build glmops: {', '.join(missing)} missing beside setup.py (MANIFEST.in grafts them into the sdist)")
        shutil.rmtree(target, ignore_errors=True)
        for name in CONTENT_DIRS:
            shutil.copytree(ROOT / name, target / name, ignore=JUNK)


setup(cmdclass={"build_py": build_py_with_content})
