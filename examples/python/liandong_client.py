#!/usr/bin/env python3
"""A small Python client for the Liandong (联动) gateway, over mutual TLS.

It speaks the `liandong.v1.Exchange` gRPC contract (proto/liandong/v1/) with
grpcio, to show that the contract needs nothing Rust-specific. Use it as a
library::

    import liandong_client as lc

    client = lc.Client.from_pki("localhost:7443", "deploy/dev/pki", "cz-eeb-xiangyuan")
    signer = lc.Signer.from_pki("deploy/dev/pki", "cz-eeb-xiangyuan")
    n = lc.notification_from_json(open("n.json").read())
    receipt = client.publish(signer.sign(n))

    sub = client.subscribe("inbox", events=["CASE_TRANSFERRED"])
    for delivery in sub:
        handle(delivery)              # store it durably first ...
        sub.ack(delivery.sequence)    # ... then acknowledge it
    sub.close()                       # half-close and drain: last acks land

or from the command line (``python liandong_client.py --help``).

The generated modules (`liandong.v1.exchange_pb2`, `..._pb2_grpc`,
`options_pb2`) are imported from `$LIANDONG_STUBS` or `sys.path`; when they
are missing, they are generated with `grpc_tools.protoc` from the `.proto`
files of this repository into a temporary directory. Nothing generated is
committed.
"""

from __future__ import annotations

import argparse
import hashlib
import atexit
import importlib
import importlib.resources
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import grpc
from google.protobuf import json_format

HERE = Path(__file__).resolve().parent
#: The `.proto` files of this repository (override with $LIANDONG_PROTO).
DEFAULT_PROTO_DIR = Path(os.environ.get("LIANDONG_PROTO", HERE.parent.parent / "proto"))
PROTO_FILES = ("liandong/v1/exchange.proto", "liandong/v1/options.proto")


# --------------------------------------------------------------------------
# Generated stubs
# --------------------------------------------------------------------------


def generate_stubs(out_dir: Union[str, Path], proto_dir: Union[str, Path] = DEFAULT_PROTO_DIR) -> None:
    """Runs protoc (bundled with grpcio-tools) on the Liandong protos.

    Same as ``python -m grpc_tools.protoc -I proto --python_out=OUT
    --grpc_python_out=OUT liandong/v1/exchange.proto liandong/v1/options.proto``.
    """
    from grpc_tools import protoc

    # The well-known types (timestamp.proto, descriptor.proto) ship with
    # grpcio-tools; `python -m grpc_tools.protoc` adds this include itself.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {proto_dir}")


def _import_stubs():
    exchange = importlib.import_module("liandong.v1.exchange_pb2")
    services = importlib.import_module("liandong.v1.exchange_pb2_grpc")
    options = importlib.import_module("liandong.v1.options_pb2")
    return exchange, services, options


def load_stubs(stubs_dir: Optional[str] = None, proto_dir: Union[str, Path] = DEFAULT_PROTO_DIR):
    """Imports the generated modules, generating them first if they are missing."""
    stubs_dir = stubs_dir or os.environ.get("LIANDONG_STUBS")
    if stubs_dir and stubs_dir not in sys.path:
        sys.path.insert(0, stubs_dir)
    try:
        return _import_stubs()
    except ImportError:
        for name in [m for m in sys.modules if m == "liandong" or m.startswith("liandong.")]:
            del sys.modules[name]
    out = tempfile.mkdtemp(prefix="liandong-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    generate_stubs(out, proto_dir)
    sys.path.insert(0, out)
    importlib.invalidate_caches()
    return _import_stubs()


#: Messages and enums of `liandong.v1` (exchange.proto), the generated
#: service stubs, and options.proto (the `Confidentiality` enum).
pb, rpc, opt = load_stubs()


# --------------------------------------------------------------------------
# JSON form
# --------------------------------------------------------------------------


def notification_from_json(text: str):
    """Parses the JSON form of a Notification (the proto3 JSON mapping).

    `.proto` field names (camelCase is accepted too), enum values by full
    name, timestamps in RFC 3339. Unknown fields raise
    `google.protobuf.json_format.ParseError`, as the gateway's tools do.
    """
    return json_format.Parse(text, pb.Notification())


def to_json(message) -> str:
    """One-line JSON form of any message, with the `.proto` field names.

    As the proto3 JSON mapping prescribes, Python writes 64-bit integers
    (`sequence`) as strings; every proto3 JSON parser reads both forms.
    """
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, indent=None, ensure_ascii=False
    )


def event_type(name: str) -> int:
    """`CASE_TRANSFERRED` or `EVENT_TYPE_CASE_TRANSFERRED` -> its enum number."""
    name = name.strip().upper()
    return pb.EventType.Value(name if name.startswith("EVENT_TYPE_") else f"EVENT_TYPE_{name}")


# --------------------------------------------------------------------------
# Signing (docs/SIGNING.md)
# --------------------------------------------------------------------------

#: Domain separation: the bytes every signed notification starts with.
SIGNING_DOMAIN = b"liandong.v1.Notification\n"


def signing_bytes(notification, sender: str) -> bytes:
    """The bytes an agency signs for `notification` sent as `sender`.

    The domain prefix, then the deterministic protobuf encoding of the
    notification with `signature` and `signing_key_id` cleared, `sender` set
    to the signing agency and unknown fields dropped (docs/SIGNING.md, "The
    signed bytes").
    """
    canonical = pb.Notification()
    canonical.CopyFrom(notification)
    canonical.ClearField("signature")
    canonical.ClearField("signing_key_id")
    canonical.sender = sender
    canonical.DiscardUnknownFields()
    return SIGNING_DOMAIN + canonical.SerializeToString(deterministic=True)


def key_id(agency: str, public_key: bytes) -> str:
    """`<agency>:<first 16 hex of SHA-256 of the raw 32-byte public key>`."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    return f"{agency}:{hashlib.sha256(public_key).hexdigest()[:16]}"


class Signer:
    """Signs notifications as one agency with its Ed25519 key.

    Load the `<agency>.signing.pem` that `liandong-certs init` writes (PKCS#8
    v1), or any Ed25519 private key in PKCS#8 PEM or DER, such as one made by
    ``openssl genpkey -algorithm ed25519``. Needs the `cryptography` package.
    """

    def __init__(self, agency: str, private_key):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError(f"the signing key of {agency} is not an Ed25519 key")
        self.agency = agency
        self._key = private_key
        #: The raw 32-byte public key (what the registry lists, in hex).
        self.public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        #: The id receivers look the key up by.
        self.key_id = key_id(agency, self.public_key)

    def __repr__(self) -> str:  # never the private key
        return f"Signer(agency={self.agency!r}, key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, agency: str, path: Union[str, Path]) -> "Signer":
        """The key in `path`: PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``) or DER."""
        from cryptography.hazmat.primitives import serialization

        data = Path(path).read_bytes()
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{path}: not an unencrypted Ed25519 private key in PKCS#8 PEM or DER: {error}"
            ) from None
        try:
            return cls(agency, key)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_pki(cls, pki_dir: Union[str, Path], agency: str) -> "Signer":
        """The agency's key in a dev PKI directory: `agencies/<agency>.signing.pem`."""
        return cls.from_file(agency, Path(pki_dir) / "agencies" / f"{agency}.signing.pem")

    def sign(self, notification):
        """Sets `sender`, `signing_key_id` and `signature` on `notification`
        (in place) and returns it. Sign last: any later change breaks it."""
        notification.sender = self.agency
        notification.signing_key_id = self.key_id
        notification.signature = self._key.sign(signing_bytes(notification, self.agency))
        return notification


def verify_signature(notification, sender: str, public_key: bytes) -> None:
    """Checks `notification`'s signature by `sender`'s key `public_key` (raw
    32 bytes); raises `ValueError` naming what is wrong."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(notification.signature) != 64:
        raise ValueError(f"notification.signature: is {len(notification.signature)} bytes long, not 64")
    expected = key_id(sender, public_key)
    if notification.signing_key_id != expected:
        raise ValueError(f"notification.signing_key_id: names {notification.signing_key_id!r}, expected {expected!r}")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            notification.signature, signing_bytes(notification, sender)
        )
    except InvalidSignature:
        raise ValueError(f"notification.signature: does not verify with the key {expected}") from None


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------


def pki_paths(pki_dir: Union[str, Path], agency: str) -> tuple[Path, Path, Path]:
    """(ca, cert, key) in the layout `liandong-certs init` writes."""
    pki = Path(pki_dir)
    return pki / "ca.crt", pki / "agencies" / f"{agency}.crt", pki / "agencies" / f"{agency}.key"


def connect(
    target: str,
    ca: Union[str, Path],
    cert: Union[str, Path],
    key: Union[str, Path],
    server_name: Optional[str] = None,
) -> grpc.Channel:
    """A mutual-TLS channel to the gateway at `target` (``host:port``).

    The gateway's certificate is checked against `ca` and against the host
    of `target` (the dev gateway certificate names `localhost` and
    `127.0.0.1`); `server_name` overrides the name checked.
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, credentials, options=options)


#: Codes after which a publish may be sent again, unchanged: nothing was
#: stored, or it was and the identical republish returns the original receipt.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Client:
    """The `Exchange` service for one agency (the one its certificate proves)."""

    def __init__(self, channel: grpc.Channel, timeout: float = 10.0):
        self.channel = channel
        self.stub = rpc.ExchangeStub(channel)
        self.timeout = timeout

    @classmethod
    def from_pki(cls, target: str, pki_dir: Union[str, Path], agency: str, **kwargs) -> "Client":
        """A client for `agency`, with the credentials of a dev PKI directory."""
        ca, cert, key = pki_paths(pki_dir, agency)
        server_name = kwargs.pop("server_name", None)
        return cls(connect(target, ca, cert, key, server_name), **kwargs)

    def close(self) -> None:
        self.channel.close()

    def publish(self, notification, retries: int = 4, backoff: float = 0.5):
        """Publishes one notification; returns its PublishReceipt.

        UNAVAILABLE and DEADLINE_EXCEEDED are retried with the very same
        notification (same id, same content): safe, because the gateway
        answers an identical republish with the original receipt
        (`duplicate=True`). Any other error is raised as `grpc.RpcError`
        and needs a change before sending again.
        """
        request = pb.PublishRequest(notification=notification)
        for attempt in range(retries + 1):
            try:
                return self.stub.Publish(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or attempt == retries:
                    raise
                time.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")

    def publish_stream(self, notifications: Iterable) -> Iterator:
        """Pipelined publishing: yields one receipt per notification, in order.

        The first refusal ends the stream with that notification's status
        (raised as `grpc.RpcError`); the receipts already yielded stay valid.
        """
        requests = (pb.PublishRequest(notification=n) for n in notifications)
        return iter(self.stub.PublishStream(requests))

    def subscribe(
        self,
        name: str,
        *,
        events: Sequence[str] = (),
        case_ref_prefix: str = "",
        senders: Sequence[str] = (),
        regions: Sequence[str] = (),
        start: Union[str, int] = "beginning",
        max_in_flight: int = 0,
        ack_timeout_seconds: int = 0,
    ) -> "Subscription":
        """Opens (or resumes) the durable subscription `name`.

        The filter is fixed when the subscription is created; `start`
        ("beginning", "now", or a sequence to start after) only applies
        then: an existing subscription resumes after its last acknowledged
        sequence. 0 for `max_in_flight` / `ack_timeout_seconds` means the
        gateway's defaults (64, 30 s).
        """
        if start == "beginning":
            position = pb.StartPosition(beginning=True)
        elif start == "now":
            position = pb.StartPosition(now=True)
        else:
            position = pb.StartPosition(after_sequence=int(start))
        open_request = pb.SubscriptionOpen(
            name=name,
            filter=pb.SubscriptionFilter(
                events=[event_type(e) for e in events],
                case_ref_prefix=case_ref_prefix,
                senders=list(senders),
                regions=list(regions),
            ),
            start=position,
            max_in_flight=max_in_flight,
            ack_timeout_seconds=ack_timeout_seconds,
        )
        return Subscription(self.stub, open_request)

    def get_case(self, case_ref: str, page_size: int = 0):
        """The case's whole timeline (a CaseView) as this agency may see it.

        The gateway answers GetCase in pages (`page_size` entries, 0 = its
        default of 50, and at most 2 MiB each); this follows every
        `next_page_token` and returns the first page's view with the
        timelines of all pages joined and `next_page_token` empty.
        """
        view = None
        token = ""
        while True:
            page = self.stub.GetCase(
                pb.GetCaseRequest(case_ref=case_ref, page_size=page_size, page_token=token),
                timeout=self.timeout,
            )
            if view is None:
                view = page
            else:
                view.timeline.extend(page.timeline)
            token = page.next_page_token
            if not token:
                break
        view.next_page_token = ""
        return view

    def health(self, service: str = "liandong.v1.Exchange") -> int:
        """`grpc.health.v1.Health/Check`: 1 = SERVING, 2 = NOT_SERVING.

        The Exchange service turns NOT_SERVING when the gateway shuts down;
        the overall status (service "") stays SERVING until it stops.

        Called with hand-encoded bytes so that no extra package is needed
        (grpcio-health-checking has the typed stubs).
        """
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        encoded = service.encode()
        if len(encoded) > 127:
            raise ValueError("service name too long for this minimal encoder")
        request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
        response = check(request, timeout=self.timeout)
        # HealthCheckResponse { ServingStatus status = 1; }: b"\x08" + varint.
        return response[1] if len(response) >= 2 and response[0] == 0x08 else 0


class SubscriptionEnded(Exception):
    """The gateway ended the subscription stream with status OK (after the
    request side was closed)."""


class _End:
    def __init__(self, error: Optional[grpc.RpcError]):
        self.error = error


_CLOSE = object()


class Subscription:
    """One connection to a durable subscription.

    The request stream is a generator: first the `open`, then one `ack` per
    call to `ack()`. A reader thread moves deliveries into a queue so that
    `next()` can wait with a timeout.
    """

    def __init__(self, stub, open_request):
        self._acks: queue.Queue = queue.Queue()
        self._inbox: queue.Queue = queue.Queue()
        self._end: Optional[_End] = None
        self._call = stub.Subscribe(self._requests(open_request))
        self._reader = threading.Thread(target=self._read, name="liandong-subscription", daemon=True)
        self._reader.start()

    def _requests(self, open_request):
        yield pb.SubscribeRequest(open=open_request)
        while (sequences := self._acks.get()) is not _CLOSE:
            yield pb.SubscribeRequest(ack=pb.Ack(sequences=sequences))
        # Returning half-closes the request side.

    def _read(self) -> None:
        try:
            for delivery in self._call:
                self._inbox.put(delivery)
            self._inbox.put(_End(None))
        except grpc.RpcError as error:
            self._inbox.put(_End(error))
        finally:
            self._acks.put(_CLOSE)  # lets the request generator finish

    def ack(self, *sequences: int) -> None:
        """Acknowledges deliveries once they are durably handled."""
        self._acks.put(list(sequences))

    def next(self, timeout: Optional[float] = None):
        """The next Delivery, or None when none arrives within `timeout` s.

        Raises `grpc.RpcError` when the gateway ended the stream with an
        error (e.g. ABORTED: a newer connection took the subscription over;
        UNAVAILABLE: the gateway is stopping, reconnect to resume), and
        `SubscriptionEnded` when it ended it cleanly.
        """
        if self._end is None:
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return None
            if not isinstance(item, _End):
                return item
            self._end = item
        if self._end.error is not None:
            raise self._end.error
        raise SubscriptionEnded()

    def __iter__(self) -> Iterator:
        while True:
            try:
                yield self.next()
            except SubscriptionEnded:
                return

    def close(self, timeout: float = 10.0) -> list:
        """Closes gracefully: ends the request side after the acks already
        queued, then drains the stream until the gateway ends it. The gateway
        has then processed every ack and stored the subscription's cursor.

        Returns the deliveries that arrived meanwhile (unacknowledged: they
        come again on the next connection).
        """
        self._acks.put(_CLOSE)
        rest = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.cancel()
                raise TimeoutError("the gateway did not end the subscription stream")
            try:
                delivery = self.next(remaining)
            except SubscriptionEnded:
                return rest
            if delivery is not None:
                rest.append(delivery)

    def cancel(self) -> None:
        """Drops the connection at once. Acks still in transit may be lost:
        those deliveries come again (at-least-once)."""
        self._call.cancel()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 64, 65, 69


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 64 (EX_USAGE), like liandong-adapter
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = _Parser(
        description="Liandong gateway client (liandong.v1.Exchange over mutual TLS).",
        epilog="Exit codes: 0 ok, 1 refused by the gateway, 64 usage, 65 bad input, 69 gateway unreachable.",
    )
    parser.add_argument("--gateway", default=env("LIANDONG_GATEWAY", "localhost:7443"),
                        help="host:port of the gateway (env LIANDONG_GATEWAY; default %(default)s)")
    parser.add_argument("--pki", default=env("LIANDONG_PKI"),
                        help="dev PKI directory: ca.crt, agencies/<agency>.crt/.key (env LIANDONG_PKI)")
    parser.add_argument("--agency", default=env("LIANDONG_AGENCY"),
                        help="agency id whose certificate to use with --pki (env LIANDONG_AGENCY)")
    parser.add_argument("--ca", help="CA certificate (PEM) that signed the gateway's certificate")
    parser.add_argument("--cert", help="the agency's client certificate (PEM)")
    parser.add_argument("--key", help="the agency's private key (PEM)")
    parser.add_argument("--server-name", help="name to check in the gateway's certificate, if not the host")
    commands = parser.add_subparsers(dest="command", required=True)

    publish = commands.add_parser("publish", help="publish one notification from its JSON form; prints the receipt")
    publish.add_argument("file", help="JSON file, or - for standard input")
    publish.add_argument("--signing-key", metavar="PEM",
                         help="sign with this Ed25519 key (PKCS#8 PEM or DER); with --pki and --agency "
                              "the default is agencies/<agency>.signing.pem when --sign is given")
    publish.add_argument("--sign", action="store_true",
                         help="sign the notification (docs/SIGNING.md) before publishing")

    subscribe = commands.add_parser("subscribe", help="follow a durable subscription: one JSON line per delivery, acked once printed")
    subscribe.add_argument("--name", required=True, help="subscription name (durable, per agency)")
    subscribe.add_argument("--event", action="append", default=[], help="event filter (repeatable), e.g. CASE_TRANSFERRED")
    subscribe.add_argument("--case-prefix", default="", help="case_ref prefix filter")
    subscribe.add_argument("--sender", action="append", default=[], help="sender filter (repeatable)")
    subscribe.add_argument("--region", action="append", default=[], help="region filter (repeatable)")
    subscribe.add_argument("--start", default="beginning", help="beginning | now | a sequence to start after (new subscriptions only)")
    subscribe.add_argument("--max-in-flight", type=int, default=0)
    subscribe.add_argument("--ack-timeout", type=int, default=0, help="seconds")
    subscribe.add_argument("--count", type=int, default=0, help="stop (gracefully) after this many deliveries")

    get_case = commands.add_parser("get-case", help="print a case's timeline as this agency may see it")
    get_case.add_argument("case_ref")

    commands.add_parser("health", help="check grpc.health.v1 (prints SERVING or NOT_SERVING)")
    return parser


def _client(args) -> Client:
    if args.ca and args.cert and args.key:
        ca, cert, key = args.ca, args.cert, args.key
    elif args.pki and args.agency:
        ca, cert, key = pki_paths(args.pki, args.agency)
    else:
        _parser().error("give --ca, --cert and --key, or --pki and --agency")
    return Client(connect(args.gateway, ca, cert, key, args.server_name))


def _signer(args) -> Signer:
    if args.signing_key:
        if not args.agency:
            _parser().error("--signing-key needs --agency (the agency the key signs for)")
        return Signer.from_file(args.agency, args.signing_key)
    if args.pki and args.agency:
        return Signer.from_pki(args.pki, args.agency)
    _parser().error("--sign needs --signing-key and --agency, or --pki and --agency")


def _follow(client: Client, args) -> None:
    sub = client.subscribe(
        args.name,
        events=args.event,
        case_ref_prefix=args.case_prefix,
        senders=args.sender,
        regions=args.region,
        start=args.start,
        max_in_flight=args.max_in_flight,
        ack_timeout_seconds=args.ack_timeout,
    )
    handled = 0
    try:
        for delivery in sub:
            print(to_json(delivery), flush=True)  # handled: printed and flushed
            sub.ack(delivery.sequence)
            handled += 1
            if args.count and handled >= args.count:
                break
    except KeyboardInterrupt:
        pass
    sub.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client = _client(args)
        if args.command == "publish":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
            notification = notification_from_json(text)
            if args.sign or args.signing_key:
                _signer(args).sign(notification)
            print(to_json(client.publish(notification)))
        elif args.command == "subscribe":
            _follow(client, args)
        elif args.command == "get-case":
            print(to_json(client.get_case(args.case_ref)))
        elif args.command == "health":
            print({1: "SERVING", 2: "NOT_SERVING"}.get(client.health(), "UNKNOWN"))
    except (OSError, json_format.ParseError, ValueError) as error:
        print(f"bad input: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except grpc.RpcError as error:
        code = error.code()
        unreachable = code in RETRYABLE
        print(f"{'gateway unreachable' if unreachable else 'refused'}: {code.name}: {error.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE if unreachable else EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
