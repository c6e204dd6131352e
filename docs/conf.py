"""Sphinx configuration for bsdbpf.

Build with ``sphinx-build -W -b html docs docs/_build/html`` and check the
examples with ``sphinx-build -W -b doctest docs docs/_build/doctest``.  The
doctests run against the simulated kernel, so they pass on any host.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Doctests and autodoc never touch a real /dev/bpf, even on FreeBSD.
os.environ.setdefault("BSDBPF_SYSTEM", "sim")

from bsdbpf._version import __version__  # noqa: E402

try:
    import bsdbpf._native  # noqa: F401
except ImportError:  # no compiler where the docs are built: document from source
    autodoc_mock_imports = ["bsdbpf._native"]

project = "bsdbpf"
author = "the bsdbpf authors"
copyright = "the bsdbpf authors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "sphinx.ext.intersphinx",
]

# No intersphinx mapping: the docs build must not need the network.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

nitpicky = False

exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}

doctest_global_setup = """
import errno
import os
os.environ["BSDBPF_SYSTEM"] = "sim"
"""

graphviz_output_format = "svg"

html_theme = "alabaster"
html_title = f"bsdbpf {release}"
html_theme_options = {
    "description": "FreeBSD's /dev/bpf, zero-copy buffers and net.bpf sysctls for Python",
    "fixed_sidebar": True,
}
