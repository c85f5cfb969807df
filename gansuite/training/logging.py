"""Helpers around experiment logging: a W&B mode that never blocks, the config flattened, and run metadata
(the commit and the uncommitted changes a run was trained from). A run's history is :mod:`gansuite.history`.

Loggers themselves are built from ``conf/logger/*.yaml`` by ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import json
import netrc
import os
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from gansuite.errors import ConfigError

__all__ = ["flatten_config", "git_commit", "run_metadata", "save_code_state", "sweep_group", "wandb_mode"]

_DEFAULT_WANDB_URL = "https://api.wandb.ai"
_MODE_ALIASES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


def wandb_mode(
    requested: str | None = None, timeout: float = 2.0, *, save_dir: str | os.PathLike | None = None
) -> tuple[str, str | None]:
    """Choose "online", "offline" or "disabled" so that starting W&B never prompts or hangs.

    An explicit ``requested`` mode wins, then ``WANDB_MODE``; otherwise the run goes online
    only if an API key is configured and the W&B host answers a TCP connection within
    ``timeout`` seconds.

    Args:
        save_dir: where the logger writes (its ``save_dir``), named in the offline message.

    Returns:
        ``(mode, reason)``: ``reason`` is a one-line message for the user when the run was
        sent offline on its own, else None.
    """
    for source, value in (
        ("the requested W&B mode", requested),
        ("WANDB_MODE", os.environ.get("WANDB_MODE")),
    ):
        if value:
            mode = _MODE_ALIASES.get(value.strip().lower())
            if mode is None:
                raise ConfigError(f"{source} is {value!r}; set it to one of online, offline or disabled.")
            return mode, None

    runs = Path(save_dir or os.environ.get("WANDB_DIR") or ".") / "wandb"
    later = f"logging offline to {runs}; sync later with `wandb sync {runs}/offline-run-*`."
    base_url = os.environ.get("WANDB_BASE_URL") or _DEFAULT_WANDB_URL
    if not _has_credentials(base_url):
        return "offline", f"W&B: no API key found (WANDB_API_KEY or ~/.netrc), {later}"
    if not _reachable(base_url, timeout):
        return "offline", f"W&B: {base_url} is not reachable, {later}"
    return "online", None


def sweep_group() -> str | None:
    """The sweep this process's run belongs to, as a W&B group name; None outside a sweep.

    Under ``wandb agent`` it is ``wandb-sweep-<sweep id>``; in a job of a Hydra multirun (a grid or
    an Optuna study) it is the multirun's directory (``hydra.sweep.dir``), the same for all its jobs.
    """
    sweep_id = os.environ.get("WANDB_SWEEP_ID")
    if sweep_id:
        return f"wandb-sweep-{sweep_id}"
    from hydra.core.hydra_config import HydraConfig

    from gansuite.training.sweeps import in_multirun

    return str(HydraConfig.get().sweep.dir) if in_multirun() else None


def _has_credentials(base_url: str) -> bool:
    # The same sources wandb reads, without importing it (its login path may prompt).
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    url = urlsplit(base_url)
    for machine in (url.netloc, url.hostname):
        if machine and (auth := entries.authenticators(machine)) and auth[2]:
            return True
    return False


def _reachable(base_url: str, timeout: float) -> bool:
    url = urlsplit(base_url)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    # Behind a proxy the W&B host itself is unreachable by design; wandb goes through the proxy.
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80

    connected: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                connected.append(True)
        except OSError:
            pass

    # The socket timeout does not cover DNS resolution, which can stall for much longer
    # on a machine without network; the thread bounds the whole check.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(connected)


def flatten_config(cfg: DictConfig | Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Resolve ``cfg`` and flatten it to ``{"model/name": ..., "data/_target_": ...}``.

    W&B's run table filters and groups on scalar columns, so nesting is spelled out in
    the keys. A list of scalars becomes one JSON string (``"[0.5, 0.999]"``), which can
    still be compared for equality; a list holding mappings is flattened by index
    (``callbacks/0/name``). Missing values (``???``) are kept as that string.
    """
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}
    _flatten_into(flat, "", cfg, sep)
    return flat


def _flatten_into(flat: dict[str, Any], prefix: str, value: Any, sep: str) -> None:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten_into(flat, f"{prefix}{sep}{key}" if prefix else str(key), item, sep)
    elif isinstance(value, (list, tuple)):
        if any(isinstance(item, (Mapping, list, tuple)) or OmegaConf.is_config(item) for item in value):
            for i, item in enumerate(value):
                _flatten_into(flat, f"{prefix}{sep}{i}", item, sep)
        else:
            flat[prefix] = json.dumps(list(value), default=str)
    else:
        flat[prefix] = value


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The HEAD commit of the git repository holding ``path``, with ``-dirty`` if files changed or were added.

    Files ``.gitignore`` covers do not count (run outputs, data), new source files do: the code that ran
    is then not the commit's. Returns None outside a repository, without git, or if git does not answer
    within a few seconds.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", os.fspath(path), *args], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "--verify", "HEAD")
    if not sha:
        return None
    status = git("status", "--porcelain", "--untracked-files=normal")
    return f"{sha}-dirty" if status else sha


# The saved diff stays small: a file larger than this is listed by name, not included.
_DIFF_FILE_LIMIT = 1 << 20
_DIFF_TOTAL_LIMIT = 8 << 20  # and all new files together
_DIFF_FILES = 50  # new files included at most (one git call each): a run inside a larger repository stays quick


def save_code_state(folder: Path, path: str | os.PathLike | None = None) -> str | None:
    """Record the code a run ran: ``git_commit.txt`` in ``folder`` and, for a dirty tree, ``git_diff.patch`` with
    the changes to tracked files and the new files (``git apply`` on the commit restores the tree).

    Files that ``.gitignore`` covers (run outputs, data) do not count. Returns the commit, ``-dirty`` if it is.
    """
    import gansuite

    repo = Path(path) if path is not None else Path(gansuite.__file__).parent
    commit = git_commit(repo)
    if commit is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "git_commit.txt").write_text(commit + "\n")
    if commit.endswith("-dirty"):
        def run(*args: str, where: Path = repo) -> str:
            try:
                done = subprocess.run(["git", "-C", os.fspath(where), *args], capture_output=True, text=True,
                                      timeout=30, check=False)
            except (OSError, subprocess.SubprocessError):
                return ""
            return done.stdout

        top = Path(run("rev-parse", "--show-toplevel").strip() or repo)
        parts = [run("diff", "HEAD", "--binary")]
        budget = _DIFF_TOTAL_LIMIT
        for i, name in enumerate(run("ls-files", "--others", "--exclude-standard", "--full-name", ":/").splitlines()):
            file = top / name
            size = file.stat().st_size if file.is_file() else None
            if i < _DIFF_FILES and size is not None and size <= min(_DIFF_FILE_LIMIT, budget):
                budget -= size
                parts.append(run("diff", "--no-index", "--binary", "--", "/dev/null", name, where=top))
            else:
                parts.append(f"# new file not included (over the size or count limit): {name}\n")
        (folder / "git_diff.patch").write_text("".join(parts))
    return commit


def run_metadata(
    cfg: DictConfig | Mapping[str, Any], repo_path: str | os.PathLike | None = None, commit: str | None = None
) -> dict[str, Any]:
    """Everything needed to reproduce a run: the flat config, the code's commit and version.

    Args:
        repo_path: where to look for the commit; defaults to the gansuite package's folder,
            since the code that ran matters more than the directory it was launched from.
        commit: the commit already found (``save_code_state``'s), so git is not asked twice.
    """
    import gansuite

    return {
        "config": flatten_config(cfg),
        "git_commit": commit or git_commit(repo_path if repo_path is not None else Path(gansuite.__file__).parent),
        "gansuite_version": gansuite.__version__,
    }
