"""Encoders by Hugging Face hub id: ``hf://OWNER/NAME[@REVISION][/FILE]``.

``hf://OWNER/NAME`` is a transformers-format VideoMAE repo: config.json, preprocessor_config.json
(when the repo has one) and model.safetensors (else pytorch_model.bin) are fetched into the hub
cache and the snapshot folder is loaded like a local Hugging Face folder. ``hf://OWNER/NAME/FILE``
is one weights file inside a repo (a VideoMAEv2 ``.pth``, an l4p ``.safetensors``, ...), loaded
like a local file of that suffix. ``@REVISION`` (a branch, tag or commit hash; ``%2F`` for a ``/``
in a branch name) follows the repo name; the default is ``main``.

huggingface_hub (``pip install l4p-framework[hub]``) does the fetching and owns the cache: HF_HOME
/ HF_HUB_CACHE pick the folder, HF_HUB_OFFLINE=1 reads only what is cached. Nothing is fetched
before `resolve_hub_source` is called, and only the files named above.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import WeightsError

HUB_PREFIX = "hf://"
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
"""Suffixes of a weights file addressed inside a repo (the suffixes `load_encoder` reads)."""
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
"""The weights of a transformers repo, in order of preference (safetensors never runs code)."""

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_ID = re.compile(rf"^hf://(?P<owner>{_PART})/(?P<name>{_PART})(?:@(?P<rev>[^/@]+))?(?:/(?P<file>.*))?$")
_FORMS = "hf://OWNER/NAME, hf://OWNER/NAME@REVISION or hf://OWNER/NAME[@REVISION]/FILE.pth"


@dataclass(frozen=True)
class HubId:
    """A parsed hub id: the repo, the revision (None: main) and the file inside it (None: a
    transformers folder)."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HUB_PREFIX}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


def is_hub_source(source: object) -> bool:
    """True when `source` is a hub id (a string starting with ``hf://``)."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def parse_hub_id(source: str) -> HubId:
    """The parts of ``hf://OWNER/NAME[@REVISION][/FILE]``; WeightsError naming the problem otherwise."""
    match = _ID.match(source) if is_hub_source(source) else None
    bad = f"malformed Hugging Face hub id {source!r}: "
    if match is None:
        raise WeightsError(bad + f"expected {_FORMS} (OWNER and NAME: letters, digits, '-', '_', '.')")
    owner, name, rev, file = match.group("owner", "name", "rev", "file")
    if any(s in part for part in (owner, name) for s in ("--", "..")):
        raise WeightsError(bad + "OWNER and NAME may not contain '--' or '..'")
    if file is not None:
        parts = file.split("/")
        if "@" in file:
            raise WeightsError(bad + f"the revision goes right after the repo name: {_FORMS}")
        if "\\" in file or any(p in ("", ".", "..") for p in parts):
            raise WeightsError(bad + f"{file!r} is not a file path inside the repo")
        if not file.endswith(FILE_SUFFIXES):
            raise WeightsError(
                bad + f"a file inside the repo must be a weights file ({', '.join(FILE_SUFFIXES)}), got "
                f"{file!r}; a transformers VideoMAE repo is addressed without a file: {HUB_PREFIX}{owner}/{name}"
            )
    return HubId(f"{owner}/{name}", unquote(rev) if rev else None, file)


def weights_file(path: Path) -> Path:
    """The file holding the weights of a resolved source: the file itself, or a folder's
    model.safetensors (else pytorch_model.bin). What encoder.sha256 of a registry describes."""
    if path.is_dir():
        return next((path / n for n in FOLDER_WEIGHTS if (path / n).is_file()), path / FOLDER_WEIGHTS[0])
    return path


class _Missing(Exception):
    """A file is not in the repo, or (`not_cached`) not in the cache while it cannot be fetched."""

    def __init__(self, filename: str, not_cached: bool) -> None:
        super().__init__(filename)
        self.filename, self.not_cached = filename, not_cached


class _Hub:
    """The huggingface_hub calls of one resolution, with its errors turned into WeightsErrors."""

    def __init__(self, hub_id: HubId, cache_dir: str | os.PathLike | None) -> None:
        try:
            import huggingface_hub
            from huggingface_hub import constants
            from huggingface_hub import utils as hf_errors
        except ImportError:
            raise WeightsError(
                f"loading {hub_id} needs the optional package huggingface_hub, which is not installed; "
                "pip install l4p-framework[hub] (or pip install 'huggingface_hub>=0.20')"
            ) from None
        self.hf, self.errors, self.id = huggingface_hub, hf_errors, hub_id
        self.cache_dir = cache_dir
        env = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        self.offline = bool(getattr(constants, "HF_HUB_OFFLINE", False)) or env
        self.cache = Path(cache_dir or getattr(constants, "HF_HUB_CACHE", "~/.cache/huggingface/hub"))

    def _where(self) -> str:
        return f"the hub cache {self.cache} (folder models--{self.id.repo_id.replace('/', '--')})"

    def fetch(self, filename: str, revision: str | None) -> Path:
        """The cached path of `filename`, downloaded first unless offline; _Missing if not there."""
        e = self.errors
        try:
            return Path(
                self.hf.hf_hub_download(
                    self.id.repo_id,
                    filename,
                    revision=revision,
                    cache_dir=self.cache_dir,
                    local_files_only=self.offline,
                )
            )
        except e.GatedRepoError:
            raise WeightsError(
                f"{self.id}: the repo is gated; accept its conditions at https://huggingface.co/"
                f"{self.id.repo_id} and log in (`hf auth login`, or set HF_TOKEN)"
            ) from None
        except e.RepositoryNotFoundError:
            raise WeightsError(
                f"{self.id}: no repository {self.id.repo_id!r} on the Hugging Face hub (or it is private: "
                "log in with `hf auth login`, or set HF_TOKEN); check the id"
            ) from None
        except e.RevisionNotFoundError:
            raise WeightsError(
                f"{self.id}: repository {self.id.repo_id!r} has no revision {revision!r}; use a branch, tag "
                "or commit hash of the repo"
            ) from None
        except e.LocalEntryNotFoundError:
            raise _Missing(filename, not_cached=True) from None
        except e.EntryNotFoundError:
            raise _Missing(filename, not_cached=False) from None
        except (e.HfHubHTTPError, OSError, ValueError) as exc:
            raise WeightsError(
                f"{self.id}: fetching {filename} from the Hugging Face hub failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); check the network and {self._where()}"
            ) from None

    def known_absent(self, filename: str, revision: str) -> bool:
        """True when the cache records that `filename` is not in the repo at `revision`."""
        try:
            found = self.hf.try_to_load_from_cache(
                self.id.repo_id, filename, cache_dir=self.cache_dir, revision=revision
            )
        except ValueError:
            return False
        return found is not None and not isinstance(found, str)

    def not_cached(self, names: str) -> WeightsError:
        if self.offline:
            how = (
                "HF_HUB_OFFLINE is set, so nothing is downloaded; fetch it once with network access, e.g. "
                f"`l4p encoder info {self.id}` without HF_HUB_OFFLINE, or point HF_HUB_CACHE / HF_HOME "
                "at the cache that holds it"
            )
        else:
            how = (
                "the Hugging Face hub could not be reached to fetch it (no network, a proxy, or the hub is "
                "down); connect and retry, or point HF_HUB_CACHE / HF_HOME at a cache that holds it"
            )
        rev = f" at revision {self.id.revision!r}" if self.id.revision else ""
        return WeightsError(f"{self.id}: {names}{rev} is not in {self._where()}; {how}")


def resolve_hub_source(source: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path of hub id `source`, fetched into the hub cache when it is not there.

    ``hf://OWNER/NAME[@REVISION]``: the snapshot folder (config.json, preprocessor_config.json if
    the repo has one, model.safetensors else pytorch_model.bin), all of one commit.
    ``hf://OWNER/NAME[@REVISION]/FILE``: that file. `cache_dir` overrides huggingface_hub's cache
    (HF_HUB_CACHE / HF_HOME); HF_HUB_OFFLINE=1 reads only the cache. WeightsError (what, where,
    how to fix) for a malformed id, a repo, revision or file that does not exist, a file that is
    neither cached nor fetchable, or a missing huggingface_hub.
    """
    hub_id = parse_hub_id(source)
    hub = _Hub(hub_id, cache_dir)
    if hub_id.filename is not None:
        try:
            return hub.fetch(hub_id.filename, hub_id.revision)
        except _Missing as missing:
            if missing.not_cached:
                raise hub.not_cached(hub_id.filename) from None
            raise WeightsError(
                f"{hub_id}: repository {hub_id.repo_id!r} has no file {hub_id.filename!r}"
                + (f" at revision {hub_id.revision!r}" if hub_id.revision else "")
                + "; check the file name (its path inside the repo)"
            ) from None
    try:
        config = hub.fetch("config.json", hub_id.revision)
    except _Missing as missing:
        if missing.not_cached:
            raise hub.not_cached("config.json") from None
        raise WeightsError(
            f"{hub_id}: the repo has no config.json, so it is not a transformers VideoMAE repo; a weights file "
            f"in it is addressed as {HUB_PREFIX}{hub_id.repo_id}/FILE.pth"
        ) from None
    # every further file from the commit config.json came from, even if the branch moves meanwhile
    pinned = config.parent.name if config.parent.parent.name == "snapshots" else hub_id.revision
    try:
        hub.fetch("preprocessor_config.json", pinned)
    except _Missing as missing:  # optional, but its mean/std must not be skipped just for being uncached
        if missing.not_cached and not hub.known_absent("preprocessor_config.json", pinned or "main"):
            raise hub.not_cached("preprocessor_config.json") from None
    uncached = []
    for name in FOLDER_WEIGHTS:
        try:
            weights = hub.fetch(name, pinned)
        except _Missing as missing:
            if missing.not_cached:
                uncached.append(name)
            continue
        if weights.parent != config.parent:
            raise WeightsError(f"{hub_id}: {weights} is not next to {config}; clear {hub._where()}")
        return config.parent
    if uncached:
        raise hub.not_cached(" or ".join(uncached))
    raise WeightsError(
        f"{hub_id}: the repo has config.json but neither {' nor '.join(FOLDER_WEIGHTS)}; a weights file "
        f"in it is addressed as {HUB_PREFIX}{hub_id.repo_id}/FILE.pth"
    )
