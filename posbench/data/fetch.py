"""Named public corpora (WikiText-103, WikiText-2, enwik8): where they are published, the checksums of the
published archives, and a download that resumes, verifies and unpacks them once into train/valid/test
text files under data_dir(), after which `--data NAME` works offline.

The transfer itself is download.py's. `POSBENCH_MIRROR` replaces the base URL (mirrors, and the loopback tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from ..common import SPLITS, data_dir
from ..errors import PosbenchError
from ..fileio import atomic_write
from .download import CHUNK, download, file_digest, make_download_progress

DOWNLOAD = ".download"  # folder inside the destination holding the partial and the verified archive
MARKER = "source.json"  # written last: its presence means the splits are complete


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    archive: str  # file name of the published archive; also its name under POSBENCH_MIRROR
    urls: tuple[str, ...]  # tried in order; the checksum, not the host, vouches for the bytes
    checksum: str | None  # "sha256:<hex>" or "md5:<hex>"; None: nothing published, fetch needs --no-verify
    size: int | None  # bytes of the archive
    layout: str  # "wikitext": wiki.{train,valid,test}.raw members; "enwik8": one file, cut 90/5/5
    text_bytes: int  # unpacked size of the three splits, for `posbench data list`
    provenance: str  # where the checksum was published


# The sha256s and sizes are the "download_checksums" of huggingface/datasets,
# datasets/{wikitext,enwik8}/dataset_infos.json (commit 040102f100964a33fd334e2695f1c493fa6b92db), recorded by
# that library from these very URLs. Independent copies of the same digests: DataDeps.jl recipes (WikiText-2
# raw, enwik8) and many projects that pin them. The published MD5s of the two WikiText raw archives
# (f407a2d5... and 0ca3512b..., in the ARENA course materials) would work too with an "md5:" prefix.
SOURCES: dict[str, Source] = {
    "wikitext-103": Source(
        name="wikitext-103",
        title="WikiText-103 (raw, v1)",
        archive="wikitext-103-raw-v1.zip",
        # the Salesforce S3 bucket is the original home; the author's re-host answers where S3 refuses
        urls=("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip",
              "https://wikitext.smerity.com/wikitext-103-raw-v1.zip"),
        checksum="sha256:91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794",
        size=191_984_949,
        layout="wikitext",
        text_bytes=546_501_673 + 1_159_292 + 1_305_092,
        provenance="huggingface/datasets datasets/wikitext/dataset_infos.json",
    ),
    "wikitext-2": Source(
        name="wikitext-2",
        title="WikiText-2 (raw, v1)",
        archive="wikitext-2-raw-v1.zip",
        urls=("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
              "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"),
        checksum="sha256:ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11",
        size=4_721_645,
        layout="wikitext",
        text_bytes=11_061_733 + 1_159_292 + 1_305_092,
        provenance="huggingface/datasets datasets/wikitext/dataset_infos.json",
    ),
    "enwik8": Source(
        name="enwik8",
        title="enwik8 (first 10^8 bytes of a 2006 Wikipedia XML dump)",
        archive="enwik8.zip",
        urls=("https://mattmahoney.net/dc/enwik8.zip", "http://mattmahoney.net/dc/enwik8.zip"),
        checksum="sha256:547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
        size=36_445_475,
        layout="enwik8",
        text_bytes=100_000_000,
        provenance="huggingface/datasets datasets/enwik8/dataset_infos.json",
    ),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise PosbenchError(f"Unknown corpus {name!r} to fetch: choose from {', '.join(SOURCES)}.")
    return SOURCES[name]


def source_urls(source: Source) -> list[str]:
    mirror = os.environ.get("POSBENCH_MIRROR")
    return [f"{mirror.rstrip('/')}/{source.archive}"] if mirror else list(source.urls)


def fetched_info(folder: Path) -> dict | None:
    """The source.json of a complete fetch in `folder`, or None (missing, partial, or a split file gone)."""
    try:
        info = json.loads((folder / MARKER).read_text())
        if all((folder / f"{s}.txt").stat().st_size == info["bytes"][s] for s in SPLITS):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def fetched_folder(name: str) -> Path | None:
    """The folder of NAME's splits in the data cache, when it has been fetched completely."""
    folder = data_dir() / name
    return folder if fetched_info(folder) is not None else None


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algo, _, digest = checksum.partition(":")
    if algo not in ("sha256", "md5") or not re.fullmatch(r"[0-9a-f]+", digest):
        raise PosbenchError(f"Bad checksum {checksum!r}: use sha256:<hex> or md5:<hex>.")
    return algo, digest


# ----------------------------------------------------------------------------- unpack


def _copy_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    def write(tmp: Path) -> None:
        with zf.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)

    atomic_write(dest, write)


def _utf8_boundary(data: bytes, cut: int) -> int:
    """`cut` moved back to the start of a UTF-8 character (never more than 3 bytes), so each split decodes."""
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def _unpack(source: Source, archive: Path, dest: Path) -> dict:
    """Write dest/{train,valid,test}.txt from the archive; returns how the splits were made."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise PosbenchError(f"{archive} is not a zip archive.") from None
    with zf:
        names = zf.namelist()
        if source.layout == "wikitext":
            members = {}
            for split in SPLITS:
                found = [n for ext in ("raw", "tokens") for n in names
                         if n.rsplit("/", 1)[-1] == f"wiki.{split}.{ext}"]
                if not found:
                    raise PosbenchError(f"{archive} has no wiki.{split}.raw: not a WikiText archive.")
                members[split] = found[0]  # .raw before .tokens
            for split, member in members.items():
                _copy_member(zf, member, dest / f"{split}.txt")
            return {"split": "WikiText's own train/valid/test files", "members": members}
        if source.layout == "enwik8":
            files = [n for n in names if not n.endswith("/")]
            if len(files) != 1:
                raise PosbenchError(f"{archive} should hold one file (enwik8), it has {len(files)}.")
            data = zf.read(files[0])
            # the standard character-level split: first 90M bytes train, next 5M valid, last 5M test
            cuts = [_utf8_boundary(data, len(data) * 90 // 100), _utf8_boundary(data, len(data) * 95 // 100)]
            parts = (data[:cuts[0]], data[cuts[0]:cuts[1]], data[cuts[1]:])
            for split, part in zip(SPLITS, parts, strict=True):
                atomic_write(dest / f"{split}.txt", part)
            return {"split": f"bytes [0, {cuts[0]:,}) / [{cuts[0]:,}, {cuts[1]:,}) / [{cuts[1]:,}, {len(data):,})",
                    "cuts": cuts}
    raise PosbenchError(f"Unknown archive layout {source.layout!r}.")


# ----------------------------------------------------------------------------- fetch


def _verify(path: Path, source: Source, algo: str, digest: str) -> None:
    """Size, then checksum; a file that fails is deleted (it would only fail again) and nothing is unpacked."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        path.unlink()
        raise PosbenchError(f"{source.archive}: got {size:,} bytes, the published file has {source.size:,}; "
                            "the download was deleted, run again to retry.")
    actual = file_digest(path, algo)
    if actual != digest:
        path.unlink()
        raise PosbenchError(f"{source.archive}: {algo} mismatch (expected {digest}, got {actual}); the download "
                            "was deleted. Is POSBENCH_MIRROR serving the original file?")


@dataclass
class FetchResult:
    name: str
    folder: Path
    info: dict  # the source.json written there
    already: bool  # nothing was downloaded: the folder was complete


def fetch(name: str, dest: Path | None = None, *, force: bool = False, verify: bool = True, retries: int = 3,
          backoff: float = 1.0, console: Console | None = None, progress: bool = True) -> FetchResult:
    """Download NAME's archive, verify its checksum, unpack train/valid/test.txt into `dest` (default
    data_dir()/NAME). A complete folder is left alone unless `force`. Nothing lands under a final name
    before it is whole: the download grows as .download/ARCHIVE.part and is renamed once verified, and
    each split is written atomically; source.json, written last, marks the folder complete."""
    source = get_source(name)
    folder = Path(dest).expanduser() if dest is not None else data_dir() / name
    if not force and (info := fetched_info(folder)) is not None and (
            info.get("checksum") == source.checksum or not verify):
        return FetchResult(name, folder, info, already=True)
    if verify and source.checksum is None:
        raise PosbenchError(f"No published checksum is recorded for {name}, so its download cannot be verified; "
                            "pass --no-verify to accept it unverified.")
    algo, digest = _parse_checksum(source.checksum) if verify and source.checksum else ("sha256", None)
    try:
        (folder / DOWNLOAD).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PosbenchError(f"Cannot create {folder} ({e.strerror}); set POSBENCH_DATA or pass --dest.") from None
    (folder / MARKER).unlink(missing_ok=True)  # from here on the folder is incomplete until re-marked
    archive = folder / DOWNLOAD / source.archive
    part = archive.with_name(archive.name + ".part")
    if force:
        archive.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    url = None
    if archive.exists():  # left by an unpack that did not finish: verified again below, not downloaded
        os.replace(archive, part)
    else:
        try:
            with make_download_progress(console, disable=not progress) as bar:
                url = download(source_urls(source), part, source.size if digest else None, retries=retries,
                               backoff=backoff, progress=bar, label=source.archive)
        except PosbenchError:
            with contextlib.suppress(OSError):
                (folder / DOWNLOAD).rmdir()  # only when empty: a partial download stays for the next run
            raise
    if digest is not None:
        _verify(part, source, algo, digest)
    os.replace(part, archive)
    how = _unpack(source, archive, folder)
    info = {
        "name": name, "title": source.title, "archive": source.archive, "url": url,
        "checksum": source.checksum if digest is not None else None, "verified": digest is not None,
        "checksum_from": source.provenance if digest is not None else None,
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bytes": {s: (folder / f"{s}.txt").stat().st_size for s in SPLITS}, **how,
    }
    atomic_write(folder / MARKER, (json.dumps(info, indent=2) + "\n").encode())
    shutil.rmtree(folder / DOWNLOAD, ignore_errors=True)  # the splits are what is kept
    return FetchResult(name, folder, info, already=False)
