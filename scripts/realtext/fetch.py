"""Downloads Debian packages (`apt-get download`) and npm tarballs (`npm pack`) into a cache.

Nothing is installed: apt runs on private package lists under the cache (with the English
`Translation-en` descriptions that the system's `Acquire::Languages "none"` omits), the
packages are unpacked with `dpkg-deb -x` and the tarballs with `tarfile`.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import tarfile


def _apt_options(cache: pathlib.Path) -> list[str]:
    lists = cache / "apt" / "lists"
    return [
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache={cache / 'apt'}",
        "-o",
        "Acquire::Languages=en",
        "-o",
        "Acquire::GzipIndexes=false",
    ]


def _run(cmd: list[str], cwd: pathlib.Path | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-400:]}"
        )
    return result.stdout


def apt_lists(cache: pathlib.Path) -> pathlib.Path:
    """Runs `apt-get update` once on private lists; returns the lists folder."""
    lists = cache / "apt" / "lists"
    if not any(lists.glob("*_Translation-en")):
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        print("apt-get update (private lists with Translation-en) ...", flush=True)
        _run(["apt-get", *_apt_options(cache), "update"])
    return lists


def deb_package(cache: pathlib.Path, package: str) -> dict:
    """Downloads and unpacks one .deb; returns {package, version, licence, tree, file}."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", *_apt_options(cache), "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        print(f"  fetched {found[-1].name} ({found[-1].stat().st_size / 2**20:.1f} MiB)")
    deb = found[-1]
    tree = cache / "x" / package
    if not (tree / ".done").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(tree)])
        (tree / ".done").touch()
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    copyright_file = tree / "usr" / "share" / "doc" / package / "copyright"
    text = copyright_file.read_text(errors="replace") if copyright_file.exists() else ""
    return {
        "package": package,
        "registry": "debian bookworm",
        "version": version,
        "licence": licence_of(text),
        "file": deb.name,
        "tree": tree,
    }


def npm_package(cache: pathlib.Path, package: str) -> dict:
    """`npm pack`s one package and unpacks it; returns {package, version, licence, tree}."""
    npm = cache / "npm"
    npm.mkdir(parents=True, exist_ok=True)
    stem = package.lstrip("@").replace("/", "-")
    found = sorted(npm.glob(f"{stem}-[0-9]*.tgz"))
    if not found:
        _run(["npm", "pack", package, "--silent"], cwd=npm)
        found = sorted(npm.glob(f"{stem}-[0-9]*.tgz"))
        print(f"  fetched {found[-1].name} ({found[-1].stat().st_size / 2**20:.1f} MiB)")
    tree = cache / "x" / stem
    if not (tree / ".done").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        with tarfile.open(found[-1]) as tar:
            tar.extractall(tree, filter="data")
        (tree / ".done").touch()
    meta = json.loads((tree / "package" / "package.json").read_text())
    return {
        "package": package,
        "registry": "npm",
        "version": meta["version"],
        "licence": meta.get("license", "unknown"),
        "file": found[-1].name,
        "tree": tree,
    }


_KNOWN_LICENCES = (
    "GPL",
    "LGPL",
    "GFDL",
    "BSD",
    "MIT",
    "Artistic",
    "Apache",
    "PSF",
    "public domain",
)


def licence_of(copyright_text: str) -> str:
    """DEP-5 `License:` names in order, else known licence names found in the text."""
    names: list[str] = []
    for m in re.finditer(r"^License:\s*(\S[^\n]*)$", copyright_text, re.MULTILINE):
        name = m.group(1).strip()
        if len(name) <= 40 and name not in names:
            names.append(name)
    if not names:
        names = [n for n in _KNOWN_LICENCES if re.search(rf"\b{n}\b", copyright_text, re.I)]
    return ", ".join(names[:6]) or "see the package's copyright file"
