"""The control socket's shared secret: a random token in a file only its owner can read.

Any local process can connect to a loopback port, so the control socket (which adds, removes
and disables closed-loop rules) accepts a request only when it carries the token. The engine
creates the token file the first time (``secrets.token_hex``, mode 0600, in a 0700 folder) and
refuses a token file that other users can read or that another user owns; clients
(:class:`~online_cnmfe.triggers.client.TriggerControl`, ``online-cnmfe triggers``) read the
same file. Whoever can read the file (its owner, root) can control the engine: that is the
boundary. The token crosses the socket in clear: on loopback only root can see it; for a
remote control socket (``allow_remote``) use an SSH tunnel (docs/security.md).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from online_cnmfe.errors import ConfigError

TOKEN_BYTES = 32


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/online-cnmfe/control-token`` (``~/.config/...`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "online-cnmfe" / "control-token"


def _check_private(path: Path) -> None:
    st = path.stat()
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"the control token file {path} belongs to another user (uid {st.st_uid}); use "
            "your own (triggers.control_token_file)"
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the control token file {path} can be read by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`"
        )


def read_token(path: Path | None = None) -> str:
    """The token in ``path`` (default :func:`default_token_file`), checked private.

    Raises
    ------
    ConfigError
        Missing, unreadable, empty, or readable by other users.
    """
    path = Path(path).expanduser() if path is not None else default_token_file()
    try:
        _check_private(path)
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no control token file {path}: is the engine running with its control socket "
            "on? (give its triggers.control_token_file with --token-file)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the control token file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"the control token file {path} holds no token; delete it")
    return token


def load_or_create_token(path: Path | None = None) -> str:
    """The engine's token: read from ``path`` or, when absent, created there (mode 0600).

    Creation is atomic (written beside, then hard-linked into place), so two engines starting
    together end up with the same token.

    Raises
    ------
    ConfigError
        The file is not private, or cannot be created.
    """
    path = Path(path).expanduser() if path is not None else default_token_file()
    if path.exists():
        return read_token(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(TOKEN_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another engine was faster: use its token
        finally:
            tmp.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the control token file {path}: {exc.strerror}; set "
            "triggers.control_token_file to a writable place"
        ) from None
    return read_token(path)


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison of a request's token with the engine's."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())
