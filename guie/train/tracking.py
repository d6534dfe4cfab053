"""Experiment tracking: Weights & Biases when asked (offline runs live in the run folder), else nothing.

``--wandb online`` is checked before any work (:func:`check_tracking`): an API key where wandb looks
for one (``WANDB_API_KEY``, the netrc file ``wandb login`` writes, or ``WANDB_IDENTITY_TOKEN_FILE``)
and the server answering within the bounded wait of guie.services; otherwise one line naming what is
missing and the offline alternative. Once training runs, W&B never costs the run: a ``wandb.init``
that fails is retried offline (the run syncs later), and an error while logging or finishing is
reported once and tracking stops, while training and the run folder (metrics.jsonl) go on.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guie.errors import GuieError
from guie.services import call_within, check_service, service_timeout

OFFLINE_HINT = "or train with --wandb offline and upload later with: wandb sync RUN/wandb/offline-run-*"


class Tracker:
    """No-op tracker, used for ``--wandb off``."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


def _netrc_has(host: str) -> str | None:
    """The netrc file (``$NETRC``, else ~/.netrc or ~/_netrc) when it holds a password for ``host``."""
    import netrc

    for path in ([os.environ["NETRC"]] if os.environ.get("NETRC") else []) + [
            str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]:
        if not os.path.isfile(path):
            continue
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if entry and entry[2]:
            return path
    return None


def wandb_credentials(base_url: str) -> str | None:
    """Where wandb will find credentials for ``base_url``, in its own order, or None; never the key itself.

    Raises GuieError when WANDB_API_KEY holds something wandb would refuse as a key (its own format check).
    """
    key = os.environ.get("WANDB_API_KEY")
    if key:
        try:
            from wandb.sdk.lib.wbauth import check_api_key
        except ImportError:  # wandb before the wbauth module: it checks the key itself at init
            return "WANDB_API_KEY"
        problem = check_api_key(key)
        if problem:
            raise GuieError(f"WANDB_API_KEY is not a W&B API key ({problem.rstrip('.')}); copy the key from your "
                            f"W&B settings, {OFFLINE_HINT}")
        return "WANDB_API_KEY"
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    return _netrc_has(urlsplit(base_url).hostname or "")


def wandb_base_url() -> str:
    """The W&B server wandb will talk to: its settings as it loads them (WANDB_BASE_URL, the settings file
    ``wandb login --host`` writes), else its default."""
    import wandb

    url = wandb.env.get_base_url()
    if not url:
        try:
            from wandb.sdk import wandb_setup

            url = wandb_setup.singleton().settings.base_url
        except Exception:  # noqa: BLE001 - another wandb layout: its default
            url = wandb.Settings().base_url
    return str(url).rstrip("/")


def check_tracking(mode: str, log: Callable[[str], None]) -> None:
    """Before any work: ``online`` needs credentials and an answering server (see the module docstring);
    ``offline`` and ``off`` need nothing. Raises GuieError in one line naming what is missing."""
    if mode != "online":
        return
    base_url = wandb_base_url()
    source = wandb_credentials(base_url)
    if source is None:
        raise GuieError(f"--wandb online needs a W&B API key for {base_url}: none in WANDB_API_KEY or the netrc file "
                        f"(~/.netrc); run `wandb login` or export WANDB_API_KEY, {OFFLINE_HINT}")
    check_service("W&B", base_url, f"check the network (or WANDB_BASE_URL), {OFFLINE_HINT}", log)


class WandbTracker(Tracker):
    """A W&B run; any W&B failure after it started is reported once and turns tracking off."""

    def __init__(self, mode: str, run_dir: Path, config: dict[str, Any], project: str,
                 log: Callable[[str], None] = print):
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
        elif os.environ.get("WANDB_MODE", "x").strip() == "":
            # an exported but empty WANDB_MODE fails wandb's settings validation; empty means unset
            os.environ.pop("WANDB_MODE")
        import wandb  # imported only when asked for: it is slow to import

        self.run_dir, self.log_line, self.failed, self.run = run_dir, log, False, None
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)

        def start(run_mode: str) -> Any:
            settings = wandb.Settings(
                console="off", silent=True, x_disable_stats=True, init_timeout=6 * service_timeout(),
                # only the resolved config is logged; no code, environment or requirements snapshots
                save_code=False, x_save_requirements=False, disable_git=True,
            )
            return wandb.init(project=project, dir=str(run_dir), config=config, name=run_dir.name,
                              id=run_id, resume="allow", mode=run_mode, settings=settings)

        try:
            self.run = start(mode)
        except Exception as exc:  # noqa: BLE001 - CommError, UsageError, a timeout: the run goes on without it
            if mode != "online":
                self._stop("starting the run", exc)
                return
            log(f"warning: W&B did not start the run online ({_one_line(exc)}); logging it offline instead: upload "
                f"later with wandb sync {run_dir}/wandb/offline-run-*")
            try:
                wandb.teardown()  # the failed online run still holds its id in this process
                self.run = start("offline")
            except Exception as again:  # noqa: BLE001
                self._stop("starting the run offline", again)

    def _stop(self, what: str, exc: BaseException) -> None:
        if not self.failed:
            self.log_line(f"warning: W&B failed while {what} ({_one_line(exc)}); training goes on without tracking, "
                          f"every epoch is in {self.run_dir / 'metrics.jsonl'}")
        self.failed = True

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.failed or self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever W&B raises, the run is worth more than its log
            self._stop(what, exc)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self._call("logging metrics", self.run.log, metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self._call("writing the summary", self.run.summary.update, metrics)

    def finish(self) -> None:
        """Finish the run, waiting at most 6x the service timeout for W&B to confirm; then it is left to
        ``wandb sync`` (the run's files are complete in RUN/wandb). A run whose tracking stopped after a
        failure is finished too (quietly), so no W&B run stays open in this process for the next training
        of a sweep to inherit."""
        if self.run is None:
            return
        run, self.run = self.run, None
        limit = 6 * service_timeout()
        try:
            call_within(run.finish, limit, name="guie-wandb-finish")
        except TimeoutError:
            if not self.failed:
                self.failed = True
                self.log_line(f"warning: W&B did not confirm the end of the run within {limit:g} s; its files are "
                              f"in {self.run_dir / 'wandb'}: upload them later with wandb sync "
                              f"{self.run_dir}/wandb/run-*")
        except Exception as exc:  # noqa: BLE001 - whatever W&B raises, the run is worth more than its log
            self._stop("finishing the run", exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def start_tracking(mode: str, run_dir: Path, config: dict[str, Any], project: str = "guie",
                   log: Callable[[str], None] = print) -> Tracker:
    """A tracker for ``--wandb off|offline|online`` (online checked beforehand with :func:`check_tracking`)."""
    return Tracker() if mode == "off" else WandbTracker(mode, run_dir, config, project, log)
