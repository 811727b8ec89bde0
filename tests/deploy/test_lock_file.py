"""Reproducible installs and a declared licence: the lock files (lock/README.md), the paths that install them, LICENSE.

- every pin of constraints.txt is in lock/dev.txt at its version; every locked requirement is pinned (==) and
  has a sha256 hash; a lock holds no option, path, URL or local (``tweetshop-*``) package;
- lock/build.txt, services.txt and localstripe.txt agree with dev.txt (same version, same hashes);
- every dependency of every package (its pyproject.toml) and of requirements-dev.txt is in its lock, at a
  version the package accepts; lock/*.in name every package that an install takes from the tree;
- make and both images install third-party packages only from their locks with --require-hashes, the
  installer and build backend first, and the local packages with --no-deps;
- .venv holds exactly what lock/dev.txt locks (the local packages aside);
- LICENSE is the MIT licence, and every package declares ``license = "MIT"`` (PEP 639), in its metadata too.

Each checker also runs on a bad sample, so a checker that stopped finding anything fails too. Text only: no
network, no install; the .venv check reads the installed metadata.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "lock"
CONSTRAINTS = ROOT / "constraints.txt"
REQUIREMENTS_DEV = ROOT / "requirements-dev.txt"
VENV = ROOT / ".venv"
# The packages installed from the tree, never from an index (lock/dev.in lists them for make).
PACKAGE_DIRS = sorted(
    path.parent for path in (*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml"))
)
# What each install path takes from lock/, in order: the installer and build backend always first.
INSTALLS = {
    "Makefile": ["build.txt", "dev.txt"],
    "Dockerfile": ["build.txt", "services.txt"],
    "deploy/localstripe.Dockerfile": ["build.txt", "localstripe.txt"],
}
DERIVED_LOCKS = ("build.txt", "services.txt", "localstripe.txt")  # resolved within dev.txt (-c)

_COMMENT = re.compile(r"(?:^|\s)#.*$")  # pip's rule: a '#' at the start or after whitespace
_HASH_OPTION = re.compile(r"\s--hash[=\s]+(\S+)")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Locked:
    """One requirement of a lock file."""

    name: NormalizedName
    version: str
    marker: Marker | None
    hashes: frozenset[str]


# --- reading requirement files --------------------------------------------------------------------------------------


def logical_lines(text: str) -> Iterator[str]:
    """The lines of a requirements file as pip reads them: comments dropped, backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            yield line


def lock_problems(text: str) -> list[str]:
    """What makes ``text`` no lock: an option, an unpinned, URL, local or duplicated requirement, one without a hash."""
    problems: list[str] = []
    seen: set[str] = set()
    for line in logical_lines(text):
        if line.startswith("-"):
            problems.append(f"an option or an editable in a lock: {line[:80]}")
            continue
        hashes = _HASH_OPTION.findall(" " + line)
        try:
            requirement = Requirement(_HASH_OPTION.sub("", " " + line).strip())
        except InvalidRequirement as exc:
            problems.append(f"not a requirement ({exc}): {line[:80]}")
            continue
        name = canonicalize_name(requirement.name)
        specifiers = list(requirement.specifier)
        if requirement.url:
            problems.append(f"{name}: a URL or a path ({requirement.url}), not a version from the index")
        elif len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            problems.append(f"{name}: not pinned to one version ({requirement.specifier or 'no version'})")
        if not hashes:
            problems.append(f"{name}: no --hash (pip --require-hashes refuses it)")
        problems += [f"{name}: not a sha256 hash: {value}" for value in hashes if not _SHA256.fullmatch(value)]
        if name.startswith("tweetshop-"):
            problems.append(f"{name}: a local package in a lock (it would be looked up on an index)")
        if name in seen:
            problems.append(f"{name}: locked twice")
        seen.add(name)
    return problems


def parse_lock(text: str) -> dict[NormalizedName, Locked]:
    """A lock file (one that ``lock_problems`` finds nothing wrong with) by package name."""
    locked: dict[NormalizedName, Locked] = {}
    for line in logical_lines(text):
        requirement = Requirement(_HASH_OPTION.sub("", " " + line).strip())
        name = canonicalize_name(requirement.name)
        (specifier,) = requirement.specifier
        locked[name] = Locked(name, specifier.version, requirement.marker, frozenset(_HASH_OPTION.findall(" " + line)))
    return locked


def requirements(text: str) -> list[Requirement]:
    """The requirements of a hand-written requirements or constraints file (options skipped)."""
    return [Requirement(line) for line in logical_lines(text) if not line.startswith("-")]


def pins(text: str) -> dict[NormalizedName, str]:
    """constraints.txt: ``name==version`` lines by name."""
    found: dict[NormalizedName, str] = {}
    for requirement in requirements(text):
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"constraints.txt pins exactly: {requirement}"
        found[canonicalize_name(requirement.name)] = specifier.version
    return found


def read_lock(name: str) -> dict[NormalizedName, Locked]:
    return parse_lock((LOCK / name).read_text(encoding="utf-8"))


# --- the checkers ---------------------------------------------------------------------------------------------------


def pin_problems(pinned: Mapping[NormalizedName, str], locked: Mapping[NormalizedName, Locked]) -> list[str]:
    """Every pin locked at its version (else the lock is older than constraints.txt: `make lock`)."""
    problems: list[str] = []
    for name, version in sorted(pinned.items()):
        if name not in locked:
            problems.append(f"{name}=={version} is pinned but not locked")
        elif Version(locked[name].version) != Version(version):
            problems.append(f"{name} is pinned at {version} but locked at {locked[name].version}")
    return problems


def agreement_problems(derived: Mapping[NormalizedName, Locked], dev: Mapping[NormalizedName, Locked]) -> list[str]:
    """A derived lock's packages are dev.txt's, at the same version with the same hashes."""
    problems: list[str] = []
    for name, entry in sorted(derived.items()):
        if name not in dev:
            problems.append(f"{name} is not in lock/dev.txt")
        elif (entry.version, entry.hashes) != (dev[name].version, dev[name].hashes):
            problems.append(f"{name} {entry.version} differs from lock/dev.txt's {dev[name].version} (or its hashes)")
    return problems


def dependency_problems(
    needed: Iterable[Requirement], locked: Mapping[NormalizedName, Locked], where: str
) -> list[str]:
    """Each third-party requirement is locked, at a version it accepts."""
    problems: list[str] = []
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        if name.startswith("tweetshop-"):
            continue
        if name not in locked:
            problems.append(f"{where} needs {requirement}, which is not locked")
        elif not requirement.specifier.contains(locked[name].version, prereleases=True):
            problems.append(f"{where} needs {requirement}, locked at {locked[name].version}")
    return problems


def pip_installs(text: str) -> list[str]:
    """The ``pip install`` commands of a Makefile or Dockerfile, continuation lines joined, in order."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    commands = re.split(r"&&|\|\||;|\n", joined)
    return [" ".join(command.split()) for command in commands if re.search(r"\bpip install\b", command)]


def install_problems(commands: list[str], expected_locks: list[str]) -> list[str]:
    """Third-party packages only from the expected locks (hashes required, in that order); anything else --no-deps."""
    problems: list[str] = []
    installed: list[str] = []
    for command in commands:
        if "--require-hashes" in command.split():
            found = re.findall(r"(?:-r|--requirement)[ =]\S*?lock/([\w.-]+\.txt)\b", command)
            if not found:
                problems.append(f"--require-hashes but no lock/*.txt: {command}")
            installed += found
        elif "--no-deps" not in command.split():
            problems.append(f"neither from a lock (--require-hashes -r lock/...) nor --no-deps: {command}")
    if installed != expected_locks:
        problems.append(f"installs the locks {installed}, expected {expected_locks} in that order")
    return problems


def venv_problems(
    installed: Mapping[NormalizedName, str],
    locked: Mapping[NormalizedName, Locked],
    local: set[NormalizedName],
    environment: dict[str, str] | None = None,
) -> list[str]:
    """The installed distributions are exactly the locked ones that apply here (``environment``), local ones aside."""
    problems: list[str] = []
    for name, version in sorted(installed.items()):
        if name in local:
            continue
        if name not in locked:
            problems.append(f"{name} {version} is installed but not locked (pin it and `make lock`, or uninstall it)")
        elif Version(version) != Version(locked[name].version):
            problems.append(f"{name} {version} is installed, locked at {locked[name].version} (`make install`)")
    for name, entry in sorted(locked.items()):
        applies = entry.marker is None or entry.marker.evaluate(environment)
        if applies and name not in installed:
            problems.append(f"{name}=={entry.version} is locked but not installed (`make install`)")
    return problems


def venv_site_packages() -> Path:
    found = sorted(VENV.glob("lib/python3*/site-packages"))
    if not found:
        pytest.skip("no .venv here: `make install` first")
    return found[0]


def installed_in(site_packages: Path) -> dict[NormalizedName, str]:
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=[str(site_packages)])
    }


def package_names() -> set[NormalizedName]:
    return {
        canonicalize_name(tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"]) for d in PACKAGE_DIRS
    }


def in_file_packages(name: str) -> set[Path]:
    """The local package folders a lock/*.in names (lines that are paths)."""
    lines = logical_lines((LOCK / name).read_text(encoding="utf-8"))
    return {(ROOT / line).resolve() for line in lines if line.startswith("./")}


# --- the lock files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dev.txt", *DERIVED_LOCKS])
def test_every_locked_requirement_is_pinned_with_a_hash(name: str) -> None:
    problems = lock_problems((LOCK / name).read_text(encoding="utf-8"))
    assert not problems, f"lock/{name}: {problems}"
    assert read_lock(name), f"lock/{name} locks nothing"


def test_every_pin_is_locked_at_its_version() -> None:
    problems = pin_problems(pins(CONSTRAINTS.read_text(encoding="utf-8")), read_lock("dev.txt"))
    assert not problems, f"constraints.txt and lock/dev.txt disagree (run `make lock`): {problems}"


@pytest.mark.parametrize("name", DERIVED_LOCKS)
def test_the_other_locks_agree_with_dev(name: str) -> None:
    problems = agreement_problems(read_lock(name), read_lock("dev.txt"))
    assert not problems, f"lock/{name} (run `make lock`): {problems}"


def test_the_lock_inputs_name_every_package_installed_from_the_tree() -> None:
    assert in_file_packages("dev.in") == set(PACKAGE_DIRS), "lock/dev.in lists every libs/* and services/* package"
    services = {path.parent for path in ROOT.glob("services/*/pyproject.toml")}
    expected = {ROOT / "libs/contracts", ROOT / "libs/platform", *services}
    assert in_file_packages("services.in") == expected, "lock/services.in: contracts, platform and every service"


@pytest.mark.parametrize(("in_file", "lock"), [("dev.in", "dev.txt"), ("services.in", "services.txt")])
def test_every_dependency_of_the_packages_is_in_their_lock(in_file: str, lock: str) -> None:
    locked = read_lock(lock)
    problems: list[str] = []
    for package in sorted(in_file_packages(in_file)):
        project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        needed = [Requirement(text) for text in project.get("dependencies", [])]
        problems += dependency_problems(needed, locked, str(package.relative_to(ROOT)))
    if lock == "dev.txt":
        problems += dependency_problems(requirements(REQUIREMENTS_DEV.read_text(encoding="utf-8")), locked, "dev")
    assert not problems, f"lock/{lock} is older than what needs it (run `make lock`): {problems}"


@pytest.mark.parametrize("path", INSTALLS)
def test_installs_take_third_party_packages_only_from_the_locks(path: str) -> None:
    commands = pip_installs((ROOT / path).read_text(encoding="utf-8"))
    problems = install_problems(commands, INSTALLS[path])
    assert not problems, f"{path}: {problems}"


def test_the_images_copy_the_locks_they_install() -> None:
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert not {"lock", "lock/", "lock/*", "*.txt"} & set(dockerignore), ".dockerignore drops lock/"
    for path in ("Dockerfile", "deploy/localstripe.Dockerfile"):
        text = (ROOT / path).read_text(encoding="utf-8")
        for lock in INSTALLS[path]:
            assert re.search(rf"^COPY .*\block/{re.escape(lock)}\b", text, re.MULTILINE), f"{path} copies lock/{lock}"


def test_venv_holds_exactly_the_locked_packages() -> None:
    problems = venv_problems(installed_in(venv_site_packages()), read_lock("dev.txt"), package_names())
    assert not problems, f".venv differs from lock/dev.txt: {problems}"


# --- the checkers on bad samples ------------------------------------------------------------------------------------

GOOD_HASH = "sha256:" + "ab" * 32
GOOD_LOCK = f"""# generated
pydantic==2.14.4 \\
    --hash={GOOD_HASH}
    # via tweetshop-contracts
uvloop==0.23.0 ; sys_platform == 'win32' \\
    --hash={GOOD_HASH}
"""


def test_lock_problems_finds_what_is_not_locked() -> None:
    assert lock_problems(GOOD_LOCK) == []
    bad = {
        "pydantic>=2 \\\n    --hash=" + GOOD_HASH: "not pinned",
        "pydantic==2.*  --hash=" + GOOD_HASH: "not pinned",
        "pydantic==2.14.4\n": "no --hash",
        "pydantic==2.14.4 --hash=md5:00ff": "not a sha256",
        "-e ./libs/contracts": "an option",
        f"tweetshop-contracts==1.0.0 --hash={GOOD_HASH}": "a local package",
        f"pydantic @ https://example.invalid/p.whl --hash={GOOD_HASH}": "a URL",
        f"pydantic==2.14.4 --hash={GOOD_HASH}\nPydantic==2.14.4 --hash={GOOD_HASH}": "locked twice",
    }
    for text, expected in bad.items():
        assert any(expected in problem for problem in lock_problems(text)), (text, lock_problems(text))


def test_pin_and_agreement_problems_find_a_drift() -> None:
    locked = parse_lock(GOOD_LOCK)
    assert pin_problems({canonicalize_name("pydantic"): "2.14.4"}, locked) == []
    assert pin_problems({canonicalize_name("pydantic"): "2.14.5"}, locked) == [
        "pydantic is pinned at 2.14.5 but locked at 2.14.4"
    ]
    assert pin_problems({canonicalize_name("stripe"): "16.1.0"}, locked) == ["stripe==16.1.0 is pinned but not locked"]
    # The real lock with one version moved, as a hand edit or a stale `make lock` would leave it.
    real = (LOCK / "dev.txt").read_text(encoding="utf-8")
    edited = parse_lock(re.sub(r"^pydantic==\S+", "pydantic==1.0", real, flags=re.MULTILINE))
    assert pin_problems(pins(CONSTRAINTS.read_text(encoding="utf-8")), edited) != []
    assert agreement_problems(read_lock("services.txt"), edited) != []
    other_hash = parse_lock(GOOD_LOCK.replace("ab" * 32, "cd" * 32, 1))
    assert agreement_problems(locked, other_hash) == [
        "pydantic 2.14.4 differs from lock/dev.txt's 2.14.4 (or its hashes)"
    ]


def test_dependency_problems_finds_a_missing_or_refused_version() -> None:
    locked = parse_lock(GOOD_LOCK)
    assert dependency_problems([Requirement("pydantic>=2.10"), Requirement("tweetshop-platform")], locked, "x") == []
    assert dependency_problems([Requirement("pydantic<2")], locked, "x") == ["x needs pydantic<2, locked at 2.14.4"]
    assert dependency_problems([Requirement("stripe")], locked, "x") == ["x needs stripe, which is not locked"]


def test_install_problems_finds_an_install_past_the_lock() -> None:
    good = """
$(LOCKED): lock/build.txt
\t$(PY) -m pip install -q --require-hashes -r lock/build.txt
\t$(PY) -m pip install -q --require-hashes --no-build-isolation \\
\t    -r lock/dev.txt
\t$(PY) -m pip install -q --no-deps $(PKGS)
"""
    assert install_problems(pip_installs(good), ["build.txt", "dev.txt"]) == []
    unhashed = good.replace("--require-hashes -r lock/build.txt", "-c constraints.txt $(PKGS)")
    assert any("neither from a lock" in p for p in install_problems(pip_installs(unhashed), ["build.txt", "dev.txt"]))
    deps_resolved = good.replace("--no-deps $(PKGS)", "$(PKGS)")
    assert install_problems(pip_installs(deps_resolved), ["build.txt", "dev.txt"]) != []
    assert install_problems(pip_installs(good), ["build.txt", "services.txt"]) != []
    commented = good.replace("\t$(PY) -m pip install -q --require-hashes -r lock/build.txt", "# pip install -r lock/b")
    assert install_problems(pip_installs(commented), ["build.txt", "dev.txt"]) != []


def test_venv_problems_finds_an_extra_a_missing_and_a_moved_package() -> None:
    locked = parse_lock(GOOD_LOCK)
    linux = {"sys_platform": "linux"}
    local = {canonicalize_name("tweetshop-platform")}
    exact = {canonicalize_name("pydantic"): "2.14.4", canonicalize_name("tweetshop-platform"): "0.1.0"}
    assert venv_problems(exact, locked, local, linux) == []
    assert venv_problems({**exact, canonicalize_name("six"): "1.17.0"}, locked, local, linux) == [
        "six 1.17.0 is installed but not locked (pin it and `make lock`, or uninstall it)"
    ]
    assert venv_problems({**exact, canonicalize_name("pydantic"): "2.14.5"}, locked, local, linux) == [
        "pydantic 2.14.5 is installed, locked at 2.14.4 (`make install`)"
    ]
    assert venv_problems({}, locked, local, linux) == ["pydantic==2.14.4 is locked but not installed (`make install`)"]
    # A locked package whose marker applies must be there: uvloop's applies on Windows only in this sample.
    assert venv_problems(exact, locked, local, {"sys_platform": "win32"}) == [
        "uvloop==0.23.0 is locked but not installed (`make install`)"
    ]


# --- the licence ----------------------------------------------------------------------------------------------------


def test_license_is_mit_for_the_tweetshop_contributors() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} tweetshop contributors$", text, re.MULTILINE)
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


@pytest.mark.parametrize("package", PACKAGE_DIRS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_package_declares_the_mit_licence(package: Path) -> None:
    config = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["project"].get("license") == "MIT", 'add license = "MIT" (an SPDX expression, PEP 639) to [project]'
    # setuptools reads the expression from 77 on; an older one would refuse the pyproject.toml.
    (backend,) = [Requirement(text) for text in config["build-system"]["requires"] if text.startswith("setuptools")]
    assert not backend.specifier.contains("76.1"), f'{backend}: require "setuptools>=77" for PEP 639'


def test_the_installed_packages_carry_the_licence_in_their_metadata() -> None:
    site_packages = venv_site_packages()
    found = {
        canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site_packages)])
    }
    missing = sorted(package_names() - set(found))
    assert not missing, f"not installed in .venv: {missing} (`make install`)"
    # Core metadata 2.4 (what setuptools >= 77 writes for an SPDX licence): License-Expression.
    declared = {name: found[name].metadata["License-Expression"] for name in package_names()}
    assert set(declared.values()) == {"MIT"}, f"License-Expression (`make install` rebuilds it): {declared}"
