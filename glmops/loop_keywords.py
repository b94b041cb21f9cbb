"""The `with_*` loop keywords: the tables the playbook loader reads and executor/loops.py implements.

Below both playbook/ and executor/ (no imports), so the loader need not reach into the executor.
"""

from __future__ import annotations

# Every `with_X` Ansible has: the loader knows them all, so an unsupported one gets a clear error.
WITH_LOOPS = ("items", "list", "dict", "sequence", "together", "nested", "fileglob", "indexed_items", "flattened",
              "subelements", "random_choice", "first_found", "lines", "file", "env", "template", "inventory_hostnames")
# The ones executor/loops.py makes items for.
WITH_SUPPORTED = ("items", "list", "dict", "sequence", "together", "nested", "fileglob", "indexed_items", "flattened")
