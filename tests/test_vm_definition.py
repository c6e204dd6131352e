"""The FreeBSD VM's releases agree everywhere they are named: the Vagrantfile's
pinned table (the source), the GitHub Actions matrix, and docs/vm.rst.
(``vagrant/check`` validates the Vagrantfile itself with Vagrant.)"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAGRANTFILE = (ROOT / "vagrant" / "Vagrantfile").read_text()
WORKFLOW = (ROOT / ".github" / "workflows" / "freebsd.yml").read_text()
VM_RST = (ROOT / "docs" / "vm.rst").read_text()

PINNED = {m["release"]: (m["version"], datetime.date.fromisoformat(m["until"]))
          for m in re.finditer(r'^  "(?P<release>\d+\.\d+-RELEASE)" => \{ box_version: '
                               r'"(?P<version>[^"]+)", supported_until: "(?P<until>[^"]+)" \},$',
                               VAGRANTFILE, re.MULTILINE)}
DEFAULT = re.search(r'^DEFAULT_RELEASE = "([^"]+)"$', VAGRANTFILE, re.MULTILINE)


def test_the_default_is_the_newest_pinned_release() -> None:
    assert len(PINNED) >= 2  # a 14.x and a 15.x
    assert {r.split(".")[0] for r in PINNED} >= {"14", "15"}
    assert DEFAULT is not None
    newest = max(PINNED, key=lambda r: tuple(int(n) for n in r.removesuffix("-RELEASE").split(".")))
    assert DEFAULT.group(1) == newest


def test_box_versions_are_dates_or_a_window_of_dates() -> None:
    date = r"\d{4}\.\d{2}\.\d{2}"
    for release, (version, _) in PINNED.items():
        assert re.fullmatch(rf"{date}|>= {date}, <= {date}", version), release
        bounds = [datetime.datetime.strptime(d, "%Y.%m.%d").date()
                  for d in re.findall(date, version)]
        assert bounds == sorted(bounds), release


def test_ci_runs_the_pinned_releases() -> None:
    matrix = re.search(r"release: \[([^\]]*)\]", WORKFLOW)
    assert matrix is not None
    releases = [r.strip().strip('"') for r in matrix.group(1).split(",")]
    assert sorted(releases) == sorted(r.removesuffix("-RELEASE") for r in PINNED)


def test_the_docs_list_the_pinned_releases_as_pinned() -> None:
    for release, (version, until) in PINNED.items():
        row = re.search(rf"^``{re.escape(release)}`` +``(?P<version>[^`]+)`` +(?P<until>.+)$",
                        VM_RST, re.MULTILINE)
        assert row is not None, release
        assert row["version"] == version
        assert row["until"].strip() == f"{until.day} {until:%B %Y}"
