"""Local port forwarding over SSH (what `ssh -N -L` does), with keepalive and reconnect.

One listening socket on the controller stays bound for the tunnel's whole life. Each accepted
client gets a paramiko `direct-tcpip` channel on the current SSH transport and two pumps (client ->
channel in a helper thread, channel -> client in the handler thread). A supervisor (the caller's
thread, in `Forwarder.run`) probes the transport with OpenSSH keepalive requests and, when the
transport is gone, reconnects with backoff; clients that connect meanwhile wait for it. It gives up
only on errors that retrying cannot fix: a changed or unknown host key, or authentication failure.

Only portable socket calls are used (no fork, no POSIX signals): the controller may be Windows or
macOS. Finding which process holds a busy port uses /proc on Linux and `lsof`/`netstat` elsewhere,
and is best effort.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
import queue
from dataclasses import dataclass, field

import paramiko

from glmops.errors import AuthenticationFailure, ConnectionFailure, GlmopsError, HostKeyError

WINDOW = 16 * 1024 * 1024  # per-channel receive window: big enough for a fast link's bandwidth x delay
MAX_PACKET = 256 * 1024  # what we let the server send per packet (sshd sends at most what it has read)
CHUNK = 256 * 1024  # one recv() from either side
OPEN_TIMEOUT = 15.0  # seconds to wait for the server to open a channel
WAIT_FOR_LINK = 10.0  # a client that connects while reconnecting waits this long for the link
IDLE_WORKER = 60.0  # seconds an idle worker thread waits for work before it ends
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # seconds between reconnect attempts


class PortBusy(GlmopsError):
    """The local port is taken by another program."""


class RemotePortClosed(GlmopsError):
    """Nothing accepts connections on the remote port."""


@dataclass
class TunnelStats:
    """What the tunnel is doing; read by the status line and the state file."""

    state: str = "connecting"  # connecting | up | reconnecting | failed | closed
    requests: int = 0  # client connections accepted
    active: int = 0  # client connections open now
    failed: int = 0  # client connections that got no channel (link down, remote refused)
    bytes_in: int = 0  # remote -> client
    bytes_out: int = 0  # client -> remote
    reconnects: int = 0
    last_error: str = ""
    since: float = field(default_factory=time.time)  # when `state` was entered

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _is_fatal(exc: BaseException) -> bool:
    """Errors that reconnecting cannot fix."""
    return isinstance(exc, (HostKeyError, AuthenticationFailure))


class Forwarder:
    """Forwards `bind:local_port` on this machine to `remote_host:remote_port` as seen from the SSH host.

    `connect()` returns a connected paramiko Transport (a new one each call) or raises
    ConnectionFailure; `on_event(kind, message)` is told about state changes ("up", "lost",
    "reconnected", "failed", "refused").
    """

    def __init__(
        self,
        connect: Callable[[], paramiko.Transport],
        *,
        remote_port: int,
        local_port: int,
        remote_host: str = "127.0.0.1",
        bind: str = "127.0.0.1",
        keepalive: float = 15.0,
        keepalive_count: int = 3,
        on_event: Callable[[str, str], None] | None = None,
    ):
        self._connect = connect
        self.remote = (remote_host, remote_port)
        self.bind = bind
        self.local_port = local_port
        self.keepalive = keepalive
        self.keepalive_count = keepalive_count
        self.on_event = on_event or (lambda kind, message: None)
        self.stats = TunnelStats()
        self._transport: paramiko.Transport | None = None
        self._link = threading.Condition()  # guards _transport; notified when it changes
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._lost = threading.Event()  # a handler saw the transport die: wake the supervisor
        self._stats_lock = threading.Lock()
        self._pool = _Workers()
        self._clients: set[socket.socket] = set()  # open client sockets, shut down by close()
        self.fatal: GlmopsError | None = None
        self._until: Callable[[], bool] = lambda: False
        self._tick: Callable[[], None] = lambda: None

    # -- setting up -------------------------------------------------------------------------
    def listen(self) -> None:
        """Bind the local port (raises PortBusy with who holds it and a free port to use)."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if os.name == "nt":
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_EXCLUSIVEADDRUSE", socket.SO_REUSEADDR), 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding over TIME_WAIT, not over a listener
        try:
            sock.bind((self.bind, self.local_port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), errno.EACCES):
                raise port_busy_error(self.bind, self.local_port, exc) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise GlmopsError(f"cannot listen on {self.bind}: no such address on this machine", field="--bind",
                                  hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
            raise GlmopsError(f"cannot listen on {self.bind}:{self.local_port}: {exc.strerror or exc}") from None
        sock.settimeout(0.5)  # the accept loop checks for close() twice a second (close() alone does not wake accept())
        self.local_port = sock.getsockname()[1]
        self._listener = sock

    def start(self) -> None:
        """Connect, check that the remote port accepts connections, start accepting clients."""
        if self._listener is None:
            self.listen()
        try:
            transport = self._connect()
        except BaseException:
            self.close()
            raise
        self._set_transport(transport)
        try:
            self._probe_remote(transport)
        except BaseException:
            self.close()
            raise
        self._set_state("up")
        threading.Thread(target=self._accept_loop, name="tunnel-accept", daemon=True).start()

    def _probe_remote(self, transport: paramiko.Transport) -> None:
        try:
            channel = transport.open_channel("direct-tcpip", self.remote, ("127.0.0.1", 0), timeout=OPEN_TIMEOUT)
        except paramiko.ChannelException as exc:
            raise RemotePortClosed(
                f"nothing is listening on {self.remote[0]}:{self.remote[1]} on the host ({exc.text or 'connect failed'})",
                hint="is the server running? check with `glmops status HOST`, or pick the port with --remote-port",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailure(f"the SSH connection broke while opening the tunnel: {exc}") from None
        channel.close()

    # -- running ----------------------------------------------------------------------------
    def run(self, until: Callable[[], bool] = lambda: False, tick: Callable[[], None] | None = None) -> None:
        """Supervise the link until close() is called, `until()` is true, or a fatal error
        (then `self.fatal` is set and the listener is closed). Call after start()."""
        self._until, self._tick = until, tick or (lambda: None)
        last_probe = time.monotonic()
        while not self._closed.is_set() and not until():
            self._tick()
            transport = self._transport
            if transport is None or not transport.is_active():
                self._reconnect()
                last_probe = time.monotonic()
                continue
            if self.keepalive and time.monotonic() - last_probe >= self.keepalive:
                last_probe = time.monotonic()
                if not self._answers(transport):
                    self._drop(transport, f"no answer to keepalive for {self.keepalive * self.keepalive_count:.0f} s")
                    continue
            self._lost.wait(0.25)  # time.sleep-like wait; Ctrl-C still reaches the main thread
            self._lost.clear()

    def _answers(self, transport: paramiko.Transport) -> bool:
        """Send an OpenSSH keepalive request and wait for any answer (sshd replies 'failure')."""
        answered = threading.Event()

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001 - a dead transport: no answer
                return
            if transport.is_active():
                answered.set()

        threading.Thread(target=ask, name="tunnel-keepalive", daemon=True).start()
        deadline = time.monotonic() + self.keepalive * self.keepalive_count
        while time.monotonic() < deadline and transport.is_active() and not self._closed.is_set():
            if answered.wait(0.25):
                return True
        return answered.is_set() or not transport.is_active()

    def _drop(self, transport: paramiko.Transport, why: str) -> None:
        with self._stats_lock:
            self.stats.last_error = why
        try:
            transport.close()
        except Exception:  # noqa: BLE001
            pass

    def _reconnect(self) -> None:
        started = time.monotonic()
        why = self.stats.last_error or "the SSH connection closed"
        self._set_transport(None)
        self._set_state("reconnecting")
        self.on_event("lost", f"SSH connection lost ({why}); reconnecting")
        attempt = 0
        while not self._closed.is_set():
            try:
                transport = self._connect()
            except GlmopsError as exc:
                if _is_fatal(exc):
                    self.fatal = exc
                    self._set_state("failed", str(exc))
                    self.on_event("failed", str(exc))
                    self.close(state="failed")
                    return
                with self._stats_lock:
                    self.stats.last_error = exc.message
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                if attempt in (1, 4) or attempt % 10 == 0:
                    self.on_event("retry", f"reconnect failed ({exc.message}); trying again, at most every {BACKOFF[-1]:g} s")
                resume = time.monotonic() + delay
                while not self._closed.is_set() and time.monotonic() < resume:
                    if self._until():
                        return
                    self._tick()
                    self._closed.wait(min(0.25, max(0.0, resume - time.monotonic())))
                continue
            with self._stats_lock:
                self.stats.reconnects += 1
                self.stats.last_error = ""
            self._set_transport(transport)
            self._set_state("up")
            self.on_event("reconnected", f"reconnected after {time.monotonic() - started:.1f} s")
            return

    def _set_transport(self, transport: paramiko.Transport | None) -> None:
        with self._link:
            self._transport = transport
            self._link.notify_all()

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._stats_lock:
            self.stats.state = state
            self.stats.since = time.time()
            if error is not None:
                self.stats.last_error = error

    def _wait_for_link(self, timeout: float) -> paramiko.Transport | None:
        deadline = time.monotonic() + timeout
        with self._link:
            while not self._closed.is_set():
                transport = self._transport
                if transport is not None and transport.is_active():
                    return transport
                if transport is not None:
                    self._lost.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._link.wait(min(left, 0.25))
        return None

    # -- clients ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._closed.is_set():
            try:
                client, address = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.05)  # e.g. too many open files: keep the port, try again
                continue
            with self._stats_lock:
                self.stats.requests += 1
            self._pool.submit(self._serve, client, address)

    def _open_channel(self, address: tuple) -> paramiko.Channel | None:
        for _ in range(2):  # a transport that died just now: once more on the new one
            transport = self._wait_for_link(WAIT_FOR_LINK)
            if transport is None:
                return None
            try:
                return transport.open_channel(
                    "direct-tcpip", self.remote, (str(address[0]), int(address[1])),
                    window_size=WINDOW, max_packet_size=MAX_PACKET, timeout=OPEN_TIMEOUT,
                )
            except paramiko.ChannelException as exc:
                self.on_event("refused", f"{self.remote[0]}:{self.remote[1]} refused a connection on the host ({exc.text})")
                return None
            except (paramiko.SSHException, OSError, EOFError):
                self._lost.set()
                time.sleep(0.05)
        return None

    def _serve(self, client: socket.socket, address: tuple) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._stats_lock:
            self._clients.add(client)
        channel = self._open_channel(address)
        if channel is None:
            with self._stats_lock:
                self.stats.failed += 1
                self._clients.discard(client)
            client.close()
            return
        with self._stats_lock:
            self.stats.active += 1
        upstream = threading.Event()
        self._pool.submit(self._pump_up, client, channel, upstream)
        try:
            while True:
                data = channel.recv(CHUNK)
                if not data:
                    break
                client.sendall(data)
                with self._stats_lock:
                    self.stats.bytes_in += len(data)
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            upstream.wait(30)  # the client may still be sending (half-close)
        except OSError:
            pass
        finally:
            channel.close()
            client.close()
            with self._stats_lock:
                self.stats.active -= 1
                self._clients.discard(client)

    def _pump_up(self, client: socket.socket, channel: paramiko.Channel, done: threading.Event) -> None:
        try:
            while True:
                data = client.recv(CHUNK)
                if not data:
                    channel.shutdown_write()
                    return
                channel.sendall(data)
                with self._stats_lock:
                    self.stats.bytes_out += len(data)
        except (OSError, EOFError, paramiko.SSHException):
            channel.close()
        finally:
            done.set()

    # -- closing ----------------------------------------------------------------------------
    def close(self, state: str = "closed") -> None:
        """Stop accepting, close the port and the SSH connection. Safe to call twice."""
        self._closed.set()
        if self.stats.state != "failed":
            self._set_state(state)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._link:
            transport, self._transport = self._transport, None
            self._link.notify_all()
        if transport is not None:
            transport.close()
        with self._stats_lock:
            clients = list(self._clients)
        for client in clients:  # wakes pumps blocked in recv() (close() alone would not, on Linux)
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class _Workers:
    """Daemon threads that are reused: a new client costs a queue put, not a thread start
    (0.3 ms here), and a thread blocked on a dead socket never holds up the program's exit."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., None], *args: object) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._tasks.put((function, args))
        if spawn:
            threading.Thread(target=self._work, name="tunnel-worker", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                function, args = self._tasks.get(timeout=IDLE_WORKER)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and self._tasks.empty():
                        self._idle -= 1
                        return
                continue
            try:
                function(*args)
            except Exception:  # noqa: BLE001 - one broken client must not end the worker
                pass
            with self._lock:
                self._idle += 1


# -- a busy port ----------------------------------------------------------------------------
def port_busy_error(bind: str, port: int, exc: OSError) -> PortBusy:
    holder = port_holder(port)
    who = f" by {holder}" if holder else ""
    free = free_port_near(bind, port)
    hint = f"use another port: --local-port {free}" if free else "use another port with --local-port"
    if holder and "glmops" in holder:
        hint += "; or close the other tunnel: glmops tunnel stop --all"
    reason = "permission denied (ports below 1024 need admin rights)" if exc.errno == errno.EACCES else "already in use"
    return PortBusy(f"local port {bind}:{port} is {reason}{who}", field="--local-port", hint=hint)


def free_port_near(bind: str, port: int, tries: int = 20) -> int | None:
    """The first port after `port` that can be bound now (None if none of the next `tries`)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((bind, candidate))
            except OSError:
                continue
            return candidate
    return None


def port_holder(port: int) -> str | None:
    """'PROGRAM (pid N)' listening on TCP `port`, when this machine lets us find out."""
    try:
        if sys.platform.startswith("linux") and os.path.isdir("/proc/net"):
            return _holder_from_proc(port)
        if shutil.which("lsof"):
            out = subprocess.run(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"], capture_output=True, text=True, timeout=3).stdout
            pid = re.search(r"^p(\d+)", out, re.M)
            name = re.search(r"^c(.+)", out, re.M)
            if pid:
                return f"{name.group(1) if name else 'a program'} (pid {pid.group(1)})"
        if os.name == "nt":
            out = subprocess.run(["netstat", "-ano", "-p", "TCP"], capture_output=True, text=True, timeout=5).stdout
            for line in out.splitlines():
                fields = line.split()
                if len(fields) >= 5 and fields[1].endswith(f":{port}") and fields[3].upper() == "LISTENING":
                    return f"pid {fields[4]}"
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return None


def _holder_from_proc(port: int) -> str | None:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                        inodes.add(fields[9])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return f"{_process_name(pid)} (pid {pid})"
        except OSError:
            continue
    return "another user's program"  # the socket exists but its process is not ours to see


def _process_name(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = [w.decode(errors="replace") for w in handle.read().split(b"\0") if w]
    except OSError:
        words = []
    if len(words) >= 3 and os.path.basename(words[0]).startswith("python") and words[1] == "-m":
        return " ".join(words[2:5])
    if words:
        return " ".join([os.path.basename(words[0]), *words[1:3]])[:80]
    return "a program"
