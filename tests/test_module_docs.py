"""docs/modules.md is generated from the schemas and up to date; every module and argument is documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from glmops.modules import get_module, module_names

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_and_argument_has_help() -> None:
    for name in module_names():
        module = get_module(name)
        assert module.name == name and len(module.doc) > 20, name
        for arg_name, arg in module.args.items():
            assert arg.help, f"{name}.{arg_name} has no help text"


def test_modules_doc_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_module_docs.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)  # type: ignore[union-attr]
    assert (ROOT / "docs" / "modules.md").read_text() == generator.render(), "run: python scripts/gen_module_docs.py"
