"""CurveZMQ for the detector's endpoints when they leave the machine (pyzmq's `zmq.auth`; docs/security.md).

Off loopback, anyone who can reach a port could read every event, send frames or replay requests. So a tcp endpoint
that is not loopback is CURVE-encrypted and authenticated by default: the detector (the server) holds a key pair
and a folder of authorised clients' public keys, checked by a ZAP handler (`ThreadAuthenticator`) on its context;
each connecting role holds its own key pair and the server's public key. A peer whose key is not in the folder is
refused during the handshake: it gets no events and nothing it sends reaches the detector. ipc:// and loopback tcp
stay plain (the machine's users and file permissions are the boundary there). `fes-live keygen DIR` writes the keys.

    server side:  guard = ServerAuth(ctx, curve); guard.apply(sock, addr); sock.bind(addr); ... guard.close()
    client side:  apply_client(sock, addr, curve); sock.connect(addr)
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from fes_live.stream.pipeline_config import CurveConfig

log = logging.getLogger(__name__)

REQUIRE = ("auto", "always", "never")


class AuthError(RuntimeError):
    """Keys are needed and missing or unreadable: one line saying which and how to fix it."""


def is_loopback(addr: str) -> bool:
    """True for ipc:// and inproc://, and for tcp:// on 127.0.0.0/8, ::1 or localhost."""
    if not addr.startswith("tcp://"):
        return True
    host = urlsplit(addr).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # *, an interface name or a host name: reachable from elsewhere
        return False


def needs_curve(addr: str, curve: CurveConfig) -> bool:
    if curve.require not in REQUIRE:
        raise AuthError(f"curve.require is {curve.require!r}; use one of {REQUIRE}")
    if curve.require == "never" or not addr.startswith("tcp://"):
        return False
    return curve.require == "always" or not is_loopback(addr)


def _keys(path: str, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    if not path:
        raise AuthError(f"{what} needed for CURVE: set endpoints.curve (or --keys DIR from `fes-live keygen DIR`), "
                        f"or pass --insecure to run without authentication")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise AuthError(f"{what} {path}: cannot read it ({e})") from None
    if secret and secret_key is None:
        raise AuthError(f"{what} {path} holds no secret key (use the .key_secret file)")
    return public, secret_key


def apply_client(sock: zmq.Socket, addr: str, curve: CurveConfig) -> bool:
    """Before `sock.connect(addr)`: CURVE client keys when `addr` needs them (AuthError when they are missing)."""
    if not needs_curve(addr, curve):
        return False
    public, secret = _keys(curve.client_secret, "client key pair (curve.client_secret)", True)
    server_public, _ = _keys(curve.server_public, "server public key (curve.server_public)", False)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    return True


class ServerAuth:
    """The detector's side: CURVE server keys on each socket that needs them, and the ZAP handler that admits only
    the public keys in `clients_dir` (started with the first such socket, stopped by `close`)."""

    def __init__(self, ctx: zmq.Context, curve: CurveConfig):
        self.ctx, self.curve = ctx, curve
        self.authenticator: ThreadAuthenticator | None = None

    def check(self, *addrs: str) -> None:
        """Fail before anything is bound when a key file is missing."""
        if any(needs_curve(a, self.curve) for a in addrs):
            _keys(self.curve.server_secret, "server key pair (curve.server_secret)", True)
            clients = Path(self.curve.clients_dir) if self.curve.clients_dir else None
            if clients is None or not clients.is_dir() or not any(clients.glob("*.key")):
                raise AuthError(f"authorised client keys needed for CURVE: curve.clients_dir "
                                f"{self.curve.clients_dir or '(unset)'} holds no *.key file")

    def apply(self, sock: zmq.Socket, addr: str) -> bool:
        """Before `sock.bind(addr)`."""
        if not needs_curve(addr, self.curve):
            return False
        self.check(addr)
        if self.authenticator is None:
            self.authenticator = ThreadAuthenticator(self.ctx, log=logging.getLogger("fes_live.stream.auth.zap"))
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*", location=self.curve.clients_dir)
        public, secret = _keys(self.curve.server_secret, "server key pair (curve.server_secret)", True)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = public, secret, True
        log.info("%s: CURVE on, clients from %s", addr, self.curve.clients_dir)
        return True

    def close(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


# ---------------------------------------------------------------- keys and flags

def keygen(folder: str | Path) -> dict[str, str]:
    """Write a server and a client key pair into `folder` (plus clients/client.key, the folder the detector reads
    authorised keys from); returns the `endpoints.curve` config that uses them."""
    d = Path(folder)
    (d / "clients").mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(str(d), "server")
    client_public, client_secret = zmq.auth.create_certificates(str(d), "client")
    shutil.copy(client_public, d / "clients" / "client.key")
    for secret in (server_secret, client_secret):
        Path(secret).chmod(0o600)
    return curve_paths(d)


def curve_paths(folder: str | Path) -> dict[str, str]:
    d = Path(folder).resolve()
    return {"server_secret": str(d / "server.key_secret"), "clients_dir": str(d / "clients"),
            "client_secret": str(d / "client.key_secret"), "server_public": str(d / "server.key")}


def add_flags(p: argparse.ArgumentParser) -> None:
    """--keys / --insecure for every role with a tcp endpoint."""
    p.add_argument("--keys", default=None, metavar="DIR", help="CurveZMQ keys written by `fes-live keygen DIR`")
    p.add_argument("--insecure", action="store_true",
                   help="no CURVE on tcp endpoints off loopback (anyone reaching the port may read and send)")


def endpoints_with_flags(ep: dict, args: argparse.Namespace) -> dict:
    """An endpoints dict (to_dict of Endpoints) with --keys / --insecure applied."""
    curve = dict(ep.get("curve") or {})
    if getattr(args, "keys", None):
        curve.update(curve_paths(args.keys))
    if getattr(args, "insecure", False):
        curve["require"] = "never"
    return {**ep, "curve": curve}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="where to write server.key(_secret), client.key(_secret) and clients/")


def main(args: argparse.Namespace) -> int:
    """`fes-live keygen DIR`."""
    import json
    paths = keygen(args.folder)
    print(f"keys written to {Path(args.folder).resolve()}; use --keys {args.folder} on detect / ingest / run, or "
          f"this in a config file's endpoints:")
    print(json.dumps({"curve": paths}, indent=2))
    print("copy server.key, client.key and client.key_secret to the hosts that connect; add each further client's "
          "public key to clients/")
    return 0

