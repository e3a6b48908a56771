"""Who may ask the app for what: local by default; when shared, bounded requests and no arbitrary paths.

A demo on 127.0.0.1 trusts its user. Listening on another interface or through a --share link, the
checkpoint-path field is off unless the operator names allowed roots (a path must resolve inside one,
symlinks followed), and each client may run only a few requests at once.
"""
from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.checkpoints.rundir import EMBEDDED_DIR
from toolkit.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
PUBLIC_RUNS_PER_CLIENT = 2


def host_and_port(host: str | None, port: int | None) -> tuple[str, int]:
    """Flags first, then Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, then localhost:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        raw = os.environ.get("GRADIO_SERVER_PORT")
        try:
            port = int(raw) if raw else DEFAULT_PORT
        except ValueError:
            raise UserError(f"GRADIO_SERVER_PORT must be a port number (got '{raw}')") from None
    if not 0 < port < 65536:
        raise UserError(f"port must be in 1..65535 (got {port})")
    return host, port


def port_message(host: str, port: int, err: OSError) -> str:
    return (f"cannot listen on {host}:{port} ({getattr(err, 'strerror', None) or err}): another program may be "
            f"using port {port}; choose another with --port")


def check_port_free(host: str, port: int) -> None:
    """UserError naming the port (and --port) when the app could not listen there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UserError(f"cannot resolve --host {host}: {e}") from None
    family, *_, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server does: a closed port is free
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(port_message(host, port, e)) from None


class CoreShare:
    """Each running request's share of the CPU threads: with `total` threads and n requests sampling at
    once, each samples on total // n of them (at least one) instead of every request starting torch's
    default (all cores) and the requests slowing each other down many times over.

    torch's intra-op thread count is per OS thread (OpenMP), and Gradio may run each step of a request on
    another worker thread, so `apply` sets the calling thread's count before every step; it costs
    nothing when the count is already right. Outside a request (a notebook, a script) it does nothing."""

    def __init__(self, total: int = 0):
        self.total = total          # threads for all running requests together (0: set by build_app)
        self.running = 0
        self._lock = threading.Lock()

    @contextmanager
    def request(self):
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def share(self) -> int:
        return max(1, self.total // max(1, self.running))

    def apply(self) -> None:
        if not self.running or not self.total:
            return
        import torch    # deferred: the policy is read before the app imports torch (python -m gui --help)
        share = self.share()
        if torch.get_num_threads() != share:
            torch.set_num_threads(share)


CORES = CoreShare()      # the app's one share (gui.live.Run.advance applies it before every step)


@dataclass
class AccessPolicy:
    public: bool = False                       # reachable by others: bind beyond localhost, or --share
    allowed_roots: tuple[Path, ...] = ()       # where checkpoint paths may point when public
    runs_per_client: int = 0                   # concurrent requests per client; 0 = unlimited
    _running: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_launch(cls, host: str, share: bool, roots=(), runs_per_client: int | None = None) -> "AccessPolicy":
        public = share or host not in LOCAL_HOSTS
        resolved = []
        for r in roots or ():
            p = Path(r).expanduser().resolve()
            if not p.is_dir():
                raise UserError(f"--allow-roots: {r} is not a directory")
            resolved.append(p)
        if runs_per_client is None:
            runs_per_client = PUBLIC_RUNS_PER_CLIENT if public else 0
        if runs_per_client < 0:
            raise UserError(f"--runs-per-client must be >= 0 (got {runs_per_client})")
        return cls(public=public, allowed_roots=tuple(resolved), runs_per_client=runs_per_client)

    @property
    def paths_enabled(self) -> bool:
        return not self.public or bool(self.allowed_roots)

    def check_path(self, raw: str) -> None:
        """Refuse (UserError) a checkpoint path this policy does not allow; embedded names always pass."""
        if not self.public:
            return
        if not self.allowed_roots:
            raise UserError("loading checkpoints by path is off while the app is shared "
                            "(the operator can allow folders with --allow-roots DIR ...)")
        name = raw.strip()
        if name and "/" not in name and "\\" not in name and (EMBEDDED_DIR / name / "config.json").is_file():
            return
        p = Path(name).expanduser().resolve()
        if not any(p == root or root in p.parents for root in self.allowed_roots):
            raise UserError(f"{raw.strip()} is outside the allowed checkpoint folders "
                            f"({', '.join(str(r) for r in self.allowed_roots)})")

    def add_model(self, registry, raw: str) -> str:
        """Load a checkpoint by name or path into `registry` (the UI's Load button and the API's
        `families`) if this policy allows the path; returns its key."""
        self.check_path(raw or "")
        return registry.add(raw or "")

    @contextmanager
    def run_slot(self, client: str | None):
        """Hold one of the client's concurrent-run slots, and a share of the cores, for a request."""
        if not self.runs_per_client or client is None:
            with CORES.request():
                yield
            return
        with self._lock:
            n = self._running.get(client, 0)
            if n >= self.runs_per_client:
                raise UserError(f"you already have {n} request(s) running: wait for them to finish")
            self._running[client] = n + 1
        try:
            with CORES.request():
                yield
        finally:
            with self._lock:
                self._running[client] -= 1
                if not self._running[client]:
                    del self._running[client]


def client_of(request) -> str | None:
    """The requesting client's address (a gr.Request), or None outside a request."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) if client is not None else None
