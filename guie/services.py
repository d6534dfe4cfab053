"""Is an external service there? One bounded check, made before any work that needs it.

W&B (``--wandb online``, guie.train.tracking) and the Kaggle API (``guie-package --upload``,
``guie-submit``, guie.ship.upload) are checked with :func:`reach` before the command does anything
else: one progress line, then an answer within :func:`service_timeout` seconds (DNS included: the
request runs in a daemon thread, so a resolver that hangs cannot hold the command), and on failure
one line naming the service, what is missing and the offline alternative. The Hugging Face hub
(guie.model.hub) and W&B's finish wait through the same :func:`call_within`.
"""
from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from guie.errors import GuieError

T = TypeVar("T")


def service_timeout() -> float:
    """Seconds a service check waits: ``$GUIE_SERVICE_TIMEOUT``, default 10."""
    raw = os.environ.get("GUIE_SERVICE_TIMEOUT", "10")
    try:
        value = float(raw)
    except ValueError:
        raise GuieError(f"GUIE_SERVICE_TIMEOUT={raw!r} is not a number of seconds; set it to e.g. 10") from None
    if value <= 0:
        raise GuieError(f"GUIE_SERVICE_TIMEOUT={raw!r} must be above 0 seconds")
    return value


def call_within(call: Callable[[], T], timeout: float, name: str = "guie-service-check") -> T:
    """``call()`` in a daemon thread given ``timeout`` seconds: its result, or what it raised, or
    TimeoutError("no answer within T s") when it has not returned in time (a DNS or proxy hang is bounded
    too; the thread is left to die with the process). The one bounded wait of every service check."""
    answer: dict[str, Any] = {}

    def run() -> None:
        try:
            answer["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which names it
            answer["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    thread.join(timeout)
    if "value" in answer:
        return answer["value"]
    if "error" in answer:
        raise answer["error"]
    raise TimeoutError(f"no answer within {timeout:g} s")


def _probe(url: str, timeout: float) -> str | None:
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "guie-service-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
        return None
    except urllib.error.HTTPError:
        return None  # the server answered (401, 404, 501 ...): it is there
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    except (OSError, ValueError) as exc:  # a timeout mid-answer, a malformed URL
        return f"{type(exc).__name__}: {exc}"


def reach(url: str, timeout: float | None = None) -> str | None:
    """None when the server at ``url`` answers HTTP within ``timeout`` seconds (default
    :func:`service_timeout`), else why not in a few words ("no answer within 10 s", "ConnectionRefusedError:
    ..."). Any HTTP status counts as an answer; proxies are taken from the environment as urllib does."""
    timeout = service_timeout() if timeout is None else timeout
    try:
        problem = call_within(lambda: _probe(url, timeout), timeout + 0.5)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    return problem if problem is None else " ".join(problem.split())[:200]


def check_service(name: str, url: str, offline: str, log: Callable[[str], None]) -> None:
    """Log that ``name`` at ``url`` is being checked, then raise GuieError "NAME at URL did not answer
    (WHY); OFFLINE" when it does not answer within the bounded wait."""
    timeout = service_timeout()
    log(f"checking {name} at {url} (at most {timeout:g} s)")
    problem = reach(url, timeout)
    if problem is not None:
        raise GuieError(f"{name} at {url} did not answer ({problem}); {offline}")
