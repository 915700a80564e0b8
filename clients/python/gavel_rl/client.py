"""HTTP client for `gavel serve`'s `/get_reward`: chunking, retries with backoff bounded by a
deadline, several server URLs, and per-item results (a reward, or why the item failed).

Standard library only. The async variant uses aiohttp when it is installed, else runs the
synchronous client in a thread.
"""

import asyncio
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

DEFAULT_URL = "http://127.0.0.1:8000"

# Statuses worth another try: the server is busy, restarting, or a proxy in front of it is.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class GavelError(RuntimeError):
    """A reward call failed for good: a non-transient HTTP error, or the deadline passed."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


@dataclass
class Config:
    """Where and how to call the server. `from_env` reads the environment at call time."""

    urls: List[str] = field(default_factory=lambda: [DEFAULT_URL])
    api_key: Optional[str] = None
    timeout: float = 600.0  # seconds one reward call may take, all retries included
    chunk: int = 64  # records per HTTP request
    max_backoff: float = 10.0

    @classmethod
    def from_env(cls, timeout=None):
        urls = [u.strip().rstrip("/") for u in os.environ.get("GAVEL_URL", DEFAULT_URL).split(",") if u.strip()]
        t = os.environ.get("GAVEL_TIMEOUT")
        return cls(
            urls=urls or [DEFAULT_URL],
            api_key=os.environ.get("GAVEL_API_KEY") or None,
            timeout=float(t) if t else (timeout if timeout is not None else 600.0),
            chunk=max(1, int(os.environ.get("GAVEL_CHUNK", "64"))),
        )


@dataclass
class Item:
    """One judged item: `reward` and gavel's other scores, or `error` (kind: message)."""

    reward: Optional[float]
    extra: dict
    error: Optional[str] = None


_rr = 0
_rr_lock = threading.Lock()


def _next_url(urls):
    global _rr
    with _rr_lock:
        _rr = (_rr + 1) % (1 << 30)
        return urls[_rr % len(urls)]


def _retry_after(headers):
    try:
        return float(headers.get("Retry-After")) if headers is not None and headers.get("Retry-After") else None
    except ValueError:
        return None


def _backoff(attempt, config, hint=None):
    """Exponential backoff with jitter, at least the server's Retry-After when it sent one."""
    wait = min(config.max_backoff, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
    return max(wait, hint or 0.0)


def _split(items, n):
    return [items[i : i + n] for i in range(0, len(items), n)]


class _TooLarge(Exception):
    pass


def _headers(config):
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = "Bearer " + config.api_key
    return headers


def _failed_status(url, status, message):
    """What a non-200 reply means: raise when retrying cannot help, else the text to report."""
    if status == 413:
        raise _TooLarge(message)
    if status not in TRANSIENT_STATUS:
        raise GavelError(f"{url}/get_reward answered {status}: {message}", status=status)
    return f"{status}: {message}"


def _wait_before_retry(attempt, config, hint, deadline, last):
    """The pause before the next try; raises when it would end past the deadline."""
    wait = _backoff(attempt, config, hint)
    if time.monotonic() + wait >= deadline:
        raise GavelError(f"no reward within the {config.timeout:.0f} s deadline (last: {last})")
    return wait


def _post_once(url, body, config, remaining):
    req = urllib.request.Request(url + "/get_reward", data=json.dumps(body).encode(), headers=_headers(config))
    with urllib.request.urlopen(req, timeout=max(1.0, remaining)) as reply:
        return json.load(reply)


def _error_text(e):
    try:
        body = json.loads(e.read().decode() or "{}")
        return body.get("error", {}).get("message") or str(body)
    except Exception:  # noqa: BLE001 - the body is only a hint
        return str(e)


def _post(body, config, deadline):
    """POST one chunk with retries until it succeeds, fails for good, or the deadline passes."""
    attempt = 0
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GavelError(f"no reward within the {config.timeout:.0f} s deadline (last: {last})")
        url = _next_url(config.urls)
        hint = None
        try:
            return _post_once(url, body, config, remaining)
        except urllib.error.HTTPError as e:
            last = _failed_status(url, e.code, _error_text(e))
            hint = _retry_after(e.headers)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, OSError) as e:
            last = f"{url}: {getattr(e, 'reason', e)}"
        except ValueError as e:  # a reply that is not JSON (a proxy's error page)
            last = f"{url}: the reply is not JSON: {e}"
        time.sleep(_wait_before_retry(attempt, config, hint, deadline, last))
        attempt += 1


def _items(reply, n):
    rewards = reply.get("rewards") or []
    if len(rewards) != n:
        raise GavelError(f"the server answered {len(rewards)} rewards for {n} items")
    logs = reply.get("extra_logs") or {}
    failed = {e.get("index"): f"{e.get('kind')}: {e.get('message')}" for e in reply.get("errors") or []}
    out = []
    for i, r in enumerate(rewards):
        extra = {k: v[i] for k, v in logs.items() if isinstance(v, list) and i < len(v) and k != "error"}
        out.append(Item(None, extra, failed[i]) if i in failed else Item(float(r), extra))
    return out


def _reward_chunk(queries, labels, config, deadline):
    try:
        return _items(_post({"query": queries, "labels": labels}, config, deadline), len(queries))
    except _TooLarge as e:
        if len(queries) == 1:
            raise GavelError(f"one item is larger than the server accepts: {e}", status=413) from None
        half = (len(queries) + 1) // 2
        return _reward_chunk(queries[:half], labels[:half], config, deadline) + _reward_chunk(
            queries[half:], labels[half:], config, deadline
        )


def reward(queries: Sequence[str], labels: Sequence, config: Optional[Config] = None) -> List[Item]:
    """Judge `queries[i]` (the response text) against `labels[i]` (a gavel label); one Item each.

    The items go in chunks of `config.chunk` records, sent concurrently (the server batches them
    into shared model calls); each chunk is retried on connection errors and on 408/425/429/5xx
    (after Retry-After when given) until `config.timeout` seconds have passed, and split in two
    on 413. A non-transient error (400, 401, 404) raises GavelError at once.
    """
    config = config or Config.from_env()
    queries, labels = list(queries), list(labels)
    if len(queries) != len(labels):
        raise ValueError(f"{len(queries)} queries but {len(labels)} labels")
    if not queries:
        return []
    deadline = time.monotonic() + config.timeout
    chunks = list(zip(_split(queries, config.chunk), _split(labels, config.chunk)))
    if len(chunks) == 1:
        return _reward_chunk(chunks[0][0], chunks[0][1], config, deadline)
    with ThreadPoolExecutor(max_workers=min(len(chunks), 8 * len(config.urls))) as pool:
        parts = list(pool.map(lambda c: _reward_chunk(c[0], c[1], config, deadline), chunks))
    return [item for part in parts for item in part]


async def reward_async(queries: Sequence[str], labels: Sequence, config: Optional[Config] = None) -> List[Item]:
    """`reward` for an event loop: aiohttp when installed, else the sync client in a thread."""
    config = config or Config.from_env()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return await asyncio.to_thread(reward, queries, labels, config)
    queries, labels = list(queries), list(labels)
    if len(queries) != len(labels):
        raise ValueError(f"{len(queries)} queries but {len(labels)} labels")
    if not queries:
        return []
    deadline = time.monotonic() + config.timeout
    chunks = list(zip(_split(queries, config.chunk), _split(labels, config.chunk)))
    parts = await asyncio.gather(*(_reward_chunk_async(q, l, config, deadline) for q, l in chunks))
    return [item for part in parts for item in part]


async def _reward_chunk_async(queries, labels, config, deadline):
    try:
        return _items(await _post_async({"query": queries, "labels": labels}, config, deadline), len(queries))
    except _TooLarge as e:
        if len(queries) == 1:
            raise GavelError(f"one item is larger than the server accepts: {e}", status=413) from None
        half = (len(queries) + 1) // 2
        a = await _reward_chunk_async(queries[:half], labels[:half], config, deadline)
        b = await _reward_chunk_async(queries[half:], labels[half:], config, deadline)
        return a + b


async def _post_async(body, config, deadline):
    import aiohttp

    headers = _headers(config)
    attempt = 0
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GavelError(f"no reward within the {config.timeout:.0f} s deadline (last: {last})")
        url = _next_url(config.urls)
        hint = None
        try:
            timeout = aiohttp.ClientTimeout(total=max(1.0, remaining))
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url + "/get_reward", json=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status == 200:
                        return json.loads(text)
                    try:
                        message = json.loads(text).get("error", {}).get("message") or text
                    except ValueError:
                        message = text
                    last = _failed_status(url, resp.status, message)
                    hint = _retry_after(resp.headers)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            last = f"{url}: {e!r}"
        await asyncio.sleep(_wait_before_retry(attempt, config, hint, deadline, last))
        attempt += 1
