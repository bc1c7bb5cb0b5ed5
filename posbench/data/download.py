"""A resumable HTTP download with urllib: HTTP Range resumes a dropped transfer, transient errors are
retried, and a URL that will not serve the file yields to the next one.

Why not pooch (checksummed downloads made simple)? It restarts an interrupted download from byte 0 and
keeps no partial file, so a dropped 190 MB WikiText-103 transfer would start over; it also brings in
`requests`. Resuming is worth the ~120 lines below.
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .. import __version__
from ..errors import PosbenchError

CHUNK = 1 << 20  # bytes per read while downloading and hashing
TIMEOUT = 60  # seconds without data before a connection counts as dropped
USER_AGENT = f"posbench/{__version__} (+urllib)"  # some hosts refuse urllib's default agent


class _Retry(Exception):
    """The transfer stopped early (dropped connection, timeout, 5xx): try the same URL again, resuming."""


class _NextUrl(Exception):
    """This URL will not serve the file (404, 403, ...): try the next one."""


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _total_from(resp, offset: int) -> int | None:
    """The full file size announced by a 200 or 206 response, if any."""
    if m := re.fullmatch(r"bytes (\d+)-\d+/(\d+)", resp.headers.get("Content-Range", "").strip()):
        return int(m[2])
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _download_once(url: str, part: Path, expected: int | None, progress: Progress, task) -> None:
    """One request: append to `part` from its current size (HTTP Range), or start over when the server
    ignores the range. Returns once the announced size is reached; raises _Retry or _NextUrl."""
    offset = part.stat().st_size if part.exists() else 0
    if expected is not None and offset > expected:  # longer than the real file: it cannot be a prefix of it
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left after `offset`: complete, or corrupt (the checksum decides)
            return
        if e.code in (408, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise _NextUrl(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _Retry(str(reason)) from None
    with resp:
        if resp.status == 206:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)  # some other range: start again from byte 0
                raise _Retry("the server answered with another range")
            mode = "ab"
        else:  # 200: the server sent the whole file, so the partial one is dropped
            mode, offset = "wb", 0
        total = _total_from(resp, offset)
        if expected is not None and total is not None and total != expected:
            raise _NextUrl(f"it offers {total:,} bytes, the published file has {expected:,}")
        progress.update(task, total=total or expected, completed=offset)
        received = offset
        try:
            with open(part, mode) as f:
                while block := resp.read(CHUNK):
                    f.write(block)
                    received += len(block)
                    progress.update(task, completed=received)
        except (OSError, HTTPException) as e:  # reset, timeout, or a broken chunked body
            raise _Retry(f"connection lost at byte {received:,} ({e})") from None
    # http.client returns a short body without complaint when the peer closes early
    if total is not None and received < total:
        raise _Retry(f"connection closed at byte {received:,} of {total:,}")


def download(urls: list[str], part: Path, expected: int | None, *, retries: int = 3, backoff: float = 1.0,
             progress: Progress, label: str) -> str:
    """Fill `part` with the file at the first URL that serves it, resuming after drops (up to `retries`
    times per URL). Returns the URL used. The partial file is kept on failure, so a rerun resumes."""
    part.parent.mkdir(parents=True, exist_ok=True)
    task = progress.add_task(label, total=expected)
    problems = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                _download_once(url, part, expected, progress, task)
                return url
            except _NextUrl as e:
                problems.append(f"{url}: {e}")
                break
            except _Retry as e:
                if attempt == retries:
                    problems.append(f"{url}: {e}")
                else:
                    time.sleep(backoff * (attempt + 1))
    have = part.stat().st_size if part.exists() else 0
    kept = f" The {have:,} bytes received are kept in {part}: run the same command again to resume." if have else ""
    raise PosbenchError(f"Download of {label} failed ({'; '.join(problems)}).{kept}")


def make_download_progress(console: Console | None = None, disable: bool = False) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, disable=disable)
