"""bsdbpf."""
from bsdbpf._version import __version__
