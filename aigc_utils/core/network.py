"""Network policy: ``AIGC_OFFLINE=1`` forbids every connection; otherwise unreachable hosts fail fast."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import socket

_LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


class NetworkForbidden(OSError):
    """Raised by the socket guard when code tries to leave this machine with ``AIGC_OFFLINE=1``."""


def offline() -> bool:
    """True when ``AIGC_OFFLINE`` is set to 1/true/yes."""
    return os.environ.get("AIGC_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


def _guarded_connect(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or str(host).startswith(_LOCAL_PREFIXES):
        return _real_connect(self, address)
    raise NetworkForbidden(f"network access to {host!r} is forbidden (AIGC_OFFLINE=1)")


def forbid_network() -> None:
    """Install a socket guard: any non-loopback ``connect`` raises :class:`NetworkForbidden`."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def allow_network() -> None:
    """Remove the socket guard (tests use this to restore the default)."""
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@functools.lru_cache(maxsize=None)
def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to ``host`` within ``timeout`` seconds? Never hangs; cached."""
    if offline():
        return False

    def probe() -> bool:
        with socket.create_connection((host, port), timeout=timeout):
            return True

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout + 1)
    except Exception:  # noqa: BLE001 - DNS failure, refusal, timeout: all mean "not reachable"
        return False
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
