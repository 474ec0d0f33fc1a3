"""CI installs pinned versions (.ci/constraints.txt, made by .ci/lock): the pins must still satisfy
every requirement setup.cfg states, or a raised lower bound (a security fix) would be silently not
installed by CI until someone re-locked."""

from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    options, extras = cfg["options"], cfg["options.extras_require"]
    lines = options["install_requires"].splitlines() + extras["test"].splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip()]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split(";", 1)[0].split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_requirement_is_pinned_within_its_bounds() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in .ci/constraints.txt: run .ci/lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} in .ci/constraints.txt does not satisfy {req}: run .ci/lock"
        )


def test_the_known_advisories_are_excluded_by_the_bounds() -> None:
    """requests < 2.32.4 leaks credentials to some redirect targets (CVE-2024-47081); urllib3 < 2.5
    follows redirects it was told not to (CVE-2025-50181/50182). Neither may be installable."""
    reqs = {canonicalize_name(r.name): r for r in _requirements()}
    assert not reqs["requests"].specifier.contains("2.32.3")
    assert "urllib3" in reqs and not reqs["urllib3"].specifier.contains("2.4.0")
