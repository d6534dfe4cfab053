"""Upload a guie-package build through the official kaggle client: dataset, then notebook.

The only module in guie that reads Kaggle credentials, and only to learn whether the client will
find some (never their values). The client is imported lazily, with credentials already in place:
importing any part of the ``kaggle`` package authenticates at import time (2.x prints help or
raises SystemExit without credentials, 1.x raises OSError).

:func:`check_kaggle` runs before any work: credentials, and the API answering within a bounded wait.
Steps: the dataset is created, or given a new version when it exists (the dataset folder holds
only files; ``dir_mode="zip"`` would keep a sub-folder rather than silently drop it); the client
answers many failures in ``.error``/``.status`` instead of raising, and both are checked. Then the
dataset's status is polled until ready (bounded, one line per change), and only then is the
notebook pushed, so a failed dataset never leaves a notebook pointing at nothing.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from guie.artifacts import DATASET_DIR, KERNEL_DIR, UPLOAD_RECORD, read_report
from guie.errors import GuieError
from guie.fileio import file_sha256, write_json
from guie.services import check_service
from guie.ship.kaggle_ids import KaggleRef
from guie.ship.metadata import Build, read_build

CREDENTIALS_HELP = (
    "no Kaggle credentials found, nothing was uploaded: create an API token at "
    "https://www.kaggle.com/settings/api and export KAGGLE_API_TOKEN=<token> (or save it to "
    "~/.kaggle/access_token), or put kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR), or set "
    "KAGGLE_USERNAME and KAGGLE_KEY"
)


def kaggle_config_dir(env: Mapping[str, str]) -> Path:
    """Where the client looks for kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else the XDG folder on Linux."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]).expanduser()
    legacy = Path("~/.kaggle").expanduser()
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()) / "kaggle"
    return legacy


def find_credentials(env: Mapping[str, str] | None = None) -> str | None:
    """Where the kaggle client will find credentials, in its own order, or None. Never a secret itself."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    home = Path("~/.kaggle").expanduser()
    for name in ("access_token", "access_token.txt"):
        token_file = home / name  # the client takes the file's text, stripped, when it is not empty
        if token_file.is_file() and token_file.read_text(encoding="utf-8", errors="replace").strip():
            return str(token_file)
    config = kaggle_config_dir(env) / "kaggle.json"
    values: dict[str, Any] = {}
    if config.is_file():
        try:
            loaded = json.loads(config.read_text(encoding="utf-8") or "{}")
            values = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            values = {}
    from_env = {k: env[f"KAGGLE_{k.upper()}"] for k in ("username", "key") if env.get(f"KAGGLE_{k.upper()}")}
    if (values | from_env).get("username") and (values | from_env).get("key"):
        return "KAGGLE_USERNAME/KAGGLE_KEY" if len(from_env) == 2 else str(config)
    if (home / "credentials.json").is_file():
        return f"{home / 'credentials.json'} (kaggle auth login)"
    return None


def kaggle_endpoint() -> str:
    """The API server the kaggle client will call: kagglesdk's endpoint for ``KAGGLE_API_ENVIRONMENT``
    (``https://api.kaggle.com`` unless set), read without importing the ``kaggle`` package."""
    try:
        from kagglesdk.kaggle_env import get_endpoint, get_env
    except ImportError:
        return "https://api.kaggle.com"
    try:
        return get_endpoint(get_env())
    except Exception as exc:  # noqa: BLE001 - kagglesdk raises a bare Exception for an unknown environment
        raise GuieError(f"the kaggle client refuses KAGGLE_API_ENVIRONMENT: {one_line(exc)}; unset it") from None


def check_kaggle(offline: str, log: Callable[[str], None]) -> str:
    """Before any work: the kaggle client's credentials (where they are, never what) and its API server
    answering within guie.services' bounded wait. Returns the credentials' source; raises GuieError in one
    line naming what is missing and ``offline``, what to do without Kaggle."""
    source = find_credentials()
    if source is None:
        raise GuieError(CREDENTIALS_HELP)
    check_service("the Kaggle API", kaggle_endpoint(), offline, log)
    return source


def one_line(text: object) -> str:
    """``text`` as one line of at most 400 characters (runs of white space, newlines included, become one space)."""
    return " ".join(str(text).split())[:400]


def api_error(action: str, exc: BaseException) -> GuieError:
    """One clear line for an exception out of the kaggle client."""
    import requests

    if isinstance(exc, requests.HTTPError):
        code = exc.response.status_code if exc.response is not None else "?"
        hint = {401: "; the credentials were rejected, renew the token at https://www.kaggle.com/settings/api",
                403: "; permission denied: is OWNER your Kaggle user name (or one of your organisations)?"}
        return GuieError(f"Kaggle answered HTTP {code} to {action}: {one_line(exc)}{hint.get(code, '')}")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return GuieError(f"cannot reach Kaggle for {action} ({type(exc).__name__}); check the network and retry")
    if isinstance(exc, ValueError):
        return GuieError(f"the kaggle client refused {action}: {one_line(exc)}")
    if isinstance(exc, SystemExit):
        return GuieError(f"the kaggle client stopped during {action} (exit {exc.code}); see its output above")
    return GuieError(f"{action} failed: {type(exc).__name__}: {one_line(exc)}")


def call_kaggle(action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, a kaggle client call; any exception out of it (SystemExit included) becomes
    the one-line GuieError of :func:`api_error` for ``action`` ("the status of dataset owner/slug")."""
    try:
        return fn(*args, **kwargs)
    except GuieError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the client raises many types; each becomes one line
        raise api_error(action, exc) from None


def check_response(action: str, response: Any) -> Any:
    """The client returns many failures in ``.error``/``.status`` rather than raising."""
    if response is None:
        raise GuieError(f"{action} failed: the kaggle client returned no response (see its output above)")
    error = getattr(response, "error", None)
    status = str(getattr(response, "status", "") or "").lower()
    if error or status == "error":
        raise GuieError(f"Kaggle refused {action}: {one_line(error or status)}")
    return response


def kaggle_client(source: str) -> Any:
    """An authenticated KaggleApi; imported only here, with credentials already in place."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise GuieError("the kaggle client is not installed; pip install kaggle") from None
    except (OSError, SystemExit):
        raise GuieError(f"the kaggle client did not start with the credentials from {source}; check them with "
                        "`kaggle datasets list --mine`") from None
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:
        raise GuieError(f"Kaggle did not accept the credentials from {source}; {CREDENTIALS_HELP.split(': ', 1)[1]}") from None
    except Exception as exc:  # noqa: BLE001
        raise api_error("signing in", exc) from None
    return api


def dataset_exists(api: Any, ref: KaggleRef) -> bool:
    """``dataset_status`` answering means it exists; HTTP 404 (or 403, someone else's private one) means not."""
    import requests

    try:
        api.dataset_status(str(ref))
        return True
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code in (403, 404):
            return False
        raise api_error(f"the status of dataset {ref}", exc) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise api_error(f"the status of dataset {ref}", exc) from None


def wait_until_ready(api: Any, ref: KaggleRef, wait: float, poll: float, log: Callable[[str], None],
                     clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll the dataset's status until ``ready``; fail on ``failed``/``deleted`` or after ``wait`` seconds."""
    start, last = clock(), None
    while True:
        status = str(call_kaggle(f"the status of dataset {ref}", api.dataset_status, str(ref))).lower()
        elapsed = clock() - start
        if status != last:
            log(f"dataset {ref}: {status} ({elapsed:.0f} s)")
            last = status
        if status == "ready":
            return status
        if status in ("failed", "deleted"):
            raise GuieError(f"Kaggle reports dataset {ref} as {status}; the notebook was not pushed. See "
                            f"https://www.kaggle.com/datasets/{ref}, then rerun guie-package --upload")
        if elapsed >= wait:
            raise GuieError(f"dataset {ref} is still {status} after {wait:.0f} s; the notebook was not pushed. "
                            "Once the dataset is ready, push it with: kaggle kernels push -p BUILD/kernel "
                            "(or rerun with a longer --wait)")
        sleep(max(0.0, min(poll, wait - elapsed)))


def build_digest(folders: Build) -> dict[str, dict[str, str]]:
    """SHA-256 of every file of BUILD/dataset and BUILD/kernel, by path inside its folder."""
    return {name: {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
            for name, folder in ((DATASET_DIR, folders.dataset_dir), (KERNEL_DIR, folders.kernel_dir))}


def read_upload_record(build: Path) -> dict[str, Any]:
    """BUILD/uploaded.json, or {} when absent or unreadable (then everything counts as not uploaded)."""
    return read_report(build / UPLOAD_RECORD)


def upload_package(build: str | Path, *, message: str, public: bool = False, wait: float = 600.0,
                   poll: float = 10.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Create or version the dataset, wait until it is ready, push the notebook; return the URLs.

    Afterwards BUILD/uploaded.json records the ids, the notebook version Kaggle gave the push and the
    SHA-256 of every file sent (no credentials), so guie-submit can tell whether BUILD is current.
    """
    folders = read_build(Path(build))
    digest = build_digest(folders)
    dataset_dir, kernel_dir, dataset, kernel = (folders.dataset_dir, folders.kernel_dir, folders.dataset.ref,
                                                folders.kernel.name)
    for warning in folders.warnings:
        log(f"note: {warning}")
    source = find_credentials()
    if source is None:
        raise GuieError(CREDENTIALS_HELP)
    api = kaggle_client(source)
    log(f"signed in to Kaggle (credentials from {source})")

    created = not dataset_exists(api, dataset)
    if created:
        log(f"creating dataset {dataset} ({'public' if public else 'private'})")
        response = call_kaggle(f"creating dataset {dataset}", api.dataset_create_new, str(dataset_dir),
                         public=public, quiet=False, dir_mode="zip")
    else:
        log(f"dataset {dataset} exists; uploading a new version: {message}")
        response = call_kaggle(f"a new version of dataset {dataset}", api.dataset_create_version, str(dataset_dir),
                         version_notes=message, quiet=False, dir_mode="zip")
    check_response(f"{'creating' if created else 'versioning'} dataset {dataset}", response)
    dataset_url = getattr(response, "url", None) or f"https://www.kaggle.com/datasets/{dataset}"
    wait_until_ready(api, dataset, wait, poll, log)

    log(f"pushing notebook {kernel}")
    pushed = check_response(f"pushing notebook {kernel}", call_kaggle(f"pushing notebook {kernel}", api.kernels_push,
                                                                str(kernel_dir)))
    kernel_url = getattr(pushed, "url", None) or f"https://www.kaggle.com/code/{kernel}"
    log(f"dataset: {dataset_url}")
    log(f"notebook: {kernel_url}" + (f" (version {pushed.version_number})" if getattr(pushed, "version_number", None) else ""))
    rejected = [*(getattr(pushed, "invalid_dataset_sources", None) or []),
                *(getattr(pushed, "invalid_competition_sources", None) or [])]
    if rejected:
        raise GuieError(f"the notebook was pushed, but Kaggle did not attach {', '.join(rejected)}; check the ids "
                        f"and that you joined the competition, then push again: kaggle kernels push -p {kernel_dir}")
    version = getattr(pushed, "version_number", None)
    result = {"dataset": str(dataset), "kernel": str(kernel), "dataset_url": dataset_url, "kernel_url": kernel_url,
              "created": created, "kernel_version": version}
    write_json(Path(build) / UPLOAD_RECORD, {"dataset": str(dataset), "kernel": str(kernel), "kernel_version": version,
                                            "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            "files": digest})
    return result
