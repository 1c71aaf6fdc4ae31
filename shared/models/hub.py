"""Fetching a pinned Hub model into the local cache, failing fast and clearly when offline.

The Hub cache is tried first with no network at all; only a model that is not cached goes to
the network, and then only after a 3-second check that the Hub answers, so that a machine
with no route (or with `HF_HUB_OFFLINE=1`) gets a one-line `ModelUnavailable` at once
instead of a hang.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from shared.errors import ModelUnavailable
from shared.models.registry import ModelEntry

PROBE_TIMEOUT_S = 3.0
_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_reachable(ttl_s: float = 60.0) -> bool:
    """Whether the Hub's host accepts a TCP connection (remembered for `ttl_s`)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # the proxy decides; huggingface_hub's own timeouts apply
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    checked_at, ok = _probe_cache.get(host, (0.0, False))
    if time.monotonic() - checked_at < ttl_s:
        return ok
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        ok = True
    except OSError:
        ok = False
    _probe_cache[host] = (time.monotonic(), ok)
    return ok


def obtainable(entry: ModelEntry) -> bool:
    """Whether `entry` can be loaded here: embedded or local, in the Hub cache, or the Hub answers."""
    if entry.source != "hub":
        return True
    try:
        snapshot_download(repo_id=entry.repo_id, revision=entry.revision, local_files_only=True,
                          allow_patterns=list(entry.files) or None)
        return True
    except LocalEntryNotFoundError:
        return hub_reachable()


def fetch(entry: ModelEntry) -> Path:
    """The local folder holding `entry.files` at `entry.revision`, downloading them if needed."""
    args = dict(repo_id=entry.repo_id, revision=entry.revision, allow_patterns=list(entry.files) or None)
    try:
        return Path(snapshot_download(**args, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not hub_reachable():
        raise ModelUnavailable(
            f"{entry.name} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1). Download it on a connected machine or choose an embedded model."
        )
    try:
        return Path(snapshot_download(**args, etag_timeout=10))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ModelUnavailable(f"Could not download {entry.name} from the Hub: {err}") from err
