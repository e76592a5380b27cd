"""Fetch the real photographs used as synth4d textures (`textures=OUT/photos`).

Usage: python scripts/fetch_photos.py [OUT]   (default OUT: ~/.cache/l4p/photos)

Downloads two Debian wallpaper packages with `apt-get download` into OUT/debs (skipped when a
.deb of the package is already there), extracts them with `dpkg-deb -x` into OUT/extracted/PACKAGE
and copies the chosen photographs flat into OUT/photos under stable names (those of
data/photos/split.json and data/photos/ATTRIBUTION.md). It writes nothing else.

The photographs were chosen by looking at them (lomiri-wallpapers-16.04 20.04.0-2 and
plasma-workspace-wallpapers 4:5.27.5-2, Debian bookworm): from lomiri every jpg in
usr/share/backgrounds except the two abstract patterns (analogpattern_by_Peter_Nerlich,
umang_by_Abhishek_Mudgal); from plasma each wallpaper folder's largest image (all 2560x1600.jpg)
of the folders that are real photographs (the others are renderings, paintings or illustrations).
Then use: Synth4D(split, textures="OUT/photos", photo_split="data/photos/split.json").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

LOMIRI = "lomiri-wallpapers-16.04"
PLASMA = "plasma-workspace-wallpapers"
LOMIRI_DIR = "usr/share/backgrounds"
PLASMA_DIR = "usr/share/wallpapers"

LOMIRI_PHOTOS = (
    "Bridge_by_Sander_Klootwijk",
    "Dragonfly_by_Bolly",
    "Picture_0B_by_freespace",
    "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede",
    "aitzgorri_by_Aitzol_Berasategi",
    "free_by_Peter_Nerlich",
    "friends_by_Aitzol_Berasategi",
    "greentock_by_Peter_Nerlich",
    "life_by_Aitzol_Berasategi",
    "picosdeeuropa_by_Aitzol_Berasategi",
    "seeding_by_Clements_Engelhardt",
    "sunset_by_Aitzol_Berasategi",
)
"""lomiri photos: usr/share/backgrounds/NAME.jpg -> photos/lomiri_NAME.jpg."""
PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
)
"""plasma photos: usr/share/wallpapers/NAME/contents/images/2560x1600.jpg -> photos/plasma_NAME.jpg."""
PLASMA_IMAGE = "2560x1600.jpg"


def chosen() -> list[tuple[str, str, str]]:
    """(package, path inside the package, stable name in OUT/photos) of every chosen photo."""
    out = [(LOMIRI, f"{LOMIRI_DIR}/{name}.jpg", f"lomiri_{name}.jpg") for name in LOMIRI_PHOTOS]
    out += [
        (PLASMA, f"{PLASMA_DIR}/{name}/contents/images/{PLASMA_IMAGE}", f"plasma_{name}.jpg")
        for name in PLASMA_PHOTOS
    ]
    return out


def run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a command, exiting with its message when it fails."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True)
    except FileNotFoundError:
        sys.exit(f"fetch_photos: {cmd[0]} not found; this script needs Debian/Ubuntu's apt-get and dpkg-deb")
    except subprocess.CalledProcessError as exc:
        sys.exit(
            f"fetch_photos: {' '.join(cmd)} failed (exit {exc.returncode}); try `sudo apt-get update` first"
        )


def fetch(package: str, out: Path) -> Path:
    """Download (unless cached) and extract `package`; returns its extraction folder."""
    debs = out / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            sys.exit(f"fetch_photos: apt-get download {package} left no {package}_*.deb in {debs}")
    target = out / "extracted" / package
    if not target.is_dir():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
        tmp.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", nargs="?", default="~/.cache/l4p/photos", help="cache folder (default ~/.cache/l4p/photos)"
    )
    out = Path(parser.parse_args().out).expanduser()
    roots = {package: fetch(package, out) for package in (LOMIRI, PLASMA)}
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for package, inner, name in chosen():
        source = roots[package] / inner
        if not source.is_file():
            sys.exit(
                f"fetch_photos: {source} is missing (another package version?); update the lists in {__file__}"
            )
        shutil.copyfile(source, photos / name)
    print(f"{len(chosen())} photos in {photos}")
    print(f"use: textures={photos} photo_split=data/photos/split.json")


if __name__ == "__main__":
    main()
