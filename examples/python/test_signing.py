#!/usr/bin/env python3
"""Tests of notification signing in Python (liandong_client.Signer).

Offline, always: the worked example of docs/SIGNING.md byte for byte, and
the keys `liandong-certs init` writes in $LIANDONG_PKI (when set).

Against a REAL gateway, when LIANDONG_GATEWAY and LIANDONG_PKI are set and
the gateway's registry lists the agencies' signing keys
(`liandong-certs init --register-keys`): a notification signed here is
accepted and its delivery verifies; tampered, unsigned and wrongly signed
ones are refused.

Environment:
  LIANDONG_GATEWAY  host:port of the gateway (host as in its certificate)
  LIANDONG_PKI      the dev PKI directory (agencies/<id>.signing.pem, .pub)
  LIANDONG_STUBS    (optional) directory holding the generated liandong/v1
                    modules; generated into a temp dir when absent
  LIANDONG_SIGNING_E2E=1  the gateway tests must run: fail instead of
                    skipping when LIANDONG_GATEWAY or LIANDONG_PKI is missing

Run: python3 test_signing.py [-v]
"""

import os
import sys
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

import liandong_client as lc  # noqa: E402
from liandong_client import opt, pb  # noqa: E402

GATEWAY = os.environ.get("LIANDONG_GATEWAY", "")
PKI = os.environ.get("LIANDONG_PKI", "")
RUN = uuid.uuid4().hex[:8]
if os.environ.get("LIANDONG_SIGNING_E2E") == "1" and not (GATEWAY and PKI):
    sys.exit("LIANDONG_SIGNING_E2E=1 but LIANDONG_GATEWAY or LIANDONG_PKI is not set")
WAIT = 10.0  # seconds to wait for something that must arrive

EEB = "cz-eeb-xiangyuan"  # 襄垣 environment bureau: publishes clues
PSB = "cz-psb-xiangyuan"  # 襄垣 police: receives them

# docs/SIGNING.md, "Worked example" (RFC 8032 test 1; never use it for real).
EXAMPLE_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
EXAMPLE_SIGNED_BYTES = bytes.fromhex(
    "6c69616e646f6e672e76312e4e6f74696669636174696f6e0a"
    "0a0478792d31"
    "120f435a2d58592d323032362d30303031"
    "1803"
    "2003"
    "2a10637a2d7073622d7869616e677975616e"
    "320ce4bea6e69fa5e998b6e6aeb5"
    "3a06313430343233"
    "420608888a80d806"
    "4a06e7a7bbe98081"
    "5a10637a2d6565622d7869616e677975616e"
)
EXAMPLE_SIGNATURE = bytes.fromhex(
    "7fd0105534ba4239b395394faee89c95e8bf7a922023ba0541a6eb95ac7c9232"
    "6e965b720ed9f44f4d4b9154962235c2b85548197b3619e9b31c943e84164403"
)


def example_notification():
    return lc.notification_from_json(
        """{
          "notification_id": "xy-1",
          "case_ref": "CZ-XY-2026-0001",
          "event": "EVENT_TYPE_CASE_TRANSFERRED",
          "confidentiality": "CONFIDENTIALITY_RESTRICTED",
          "recipients": ["cz-psb-xiangyuan"],
          "confidentiality_note": "侦查阶段",
          "region": "140423",
          "occurred_at": "2026-11-20T08:30:00Z",
          "summary": "移送"
        }"""
    )


class WorkedExampleTest(unittest.TestCase):
    def test_signing_bytes_key_id_and_signature_match_the_document(self):
        signer = lc.Signer(EEB, Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED))
        self.assertEqual(signer.key_id, "cz-eeb-xiangyuan:21fe31dfa154a261")
        n = example_notification()
        self.assertEqual(lc.signing_bytes(n, EEB), EXAMPLE_SIGNED_BYTES)
        signer.sign(n)
        self.assertEqual(n.sender, EEB)
        self.assertEqual(n.signing_key_id, signer.key_id)
        self.assertEqual(n.signature, EXAMPLE_SIGNATURE)
        lc.verify_signature(n, EEB, signer.public_key)
        self.assertNotIn("PRIVATE", repr(signer))

    def test_a_change_after_signing_does_not_verify(self):
        signer = lc.Signer(EEB, Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED))
        n = signer.sign(example_notification())
        n.summary = "changed after signing"
        with self.assertRaisesRegex(ValueError, "does not verify"):
            lc.verify_signature(n, EEB, signer.public_key)
        # Moved to another sender, the same signature names the wrong key.
        n = signer.sign(example_notification())
        with self.assertRaisesRegex(ValueError, "signing_key_id"):
            lc.verify_signature(n, PSB, signer.public_key)


@unittest.skipUnless(PKI, "needs LIANDONG_PKI (a PKI written by liandong-certs init)")
class PkiKeyTest(unittest.TestCase):
    def test_the_pem_key_init_writes_loads_and_matches_its_public_key(self):
        signer = lc.Signer.from_pki(PKI, EEB)
        public_hex = (Path(PKI) / "agencies" / f"{EEB}.signing.pub").read_text().strip()
        self.assertEqual(signer.public_key.hex(), public_hex)

    def test_a_file_that_is_not_an_ed25519_key_is_refused_naming_it(self):
        tls_key = Path(PKI) / "agencies" / f"{EEB}.key"  # the TLS key (P-256)
        with self.assertRaisesRegex(ValueError, str(tls_key)):
            lc.Signer.from_file(EEB, tls_key)


def clue(nid, case_ref):
    n = pb.Notification(
        notification_id=f"{RUN}-{nid}",
        case_ref=case_ref,
        event=pb.EVENT_TYPE_CLUE_SHARED,
        confidentiality=opt.CONFIDENTIALITY_INTERNAL,
        region="140423",
        summary=f"线索 {nid}：废机油倾倒",
    )
    n.occurred_at.FromJsonString("2026-11-20T08:30:00Z")
    return n


@unittest.skipUnless(GATEWAY and PKI, "needs LIANDONG_GATEWAY and LIANDONG_PKI")
class SignedPublishTest(unittest.TestCase):
    """Needs a gateway whose registry lists the agencies' signing keys."""

    @classmethod
    def setUpClass(cls):
        cls.eeb = lc.Client.from_pki(GATEWAY, PKI, EEB)
        cls.psb = lc.Client.from_pki(GATEWAY, PKI, PSB)
        cls.signer = lc.Signer.from_pki(PKI, EEB)
        cls.public_key = bytes.fromhex(
            (Path(PKI) / "agencies" / f"{EEB}.signing.pub").read_text().strip()
        )

    @classmethod
    def tearDownClass(cls):
        cls.eeb.close()
        cls.psb.close()

    def refused(self, notification):
        with self.assertRaises(grpc.RpcError) as caught:
            self.eeb.publish(notification, retries=0)
        return caught.exception

    def test_signed_is_accepted_and_the_delivery_verifies(self):
        case_ref = f"PY-SIG-{RUN}"
        sub = self.psb.subscribe(f"py-signed-{RUN}", case_ref_prefix=case_ref)
        try:
            receipt = self.eeb.publish(self.signer.sign(clue("signed", case_ref)))
            self.assertGreater(receipt.sequence, 0)
            delivery = sub.next(timeout=WAIT)
            self.assertIsNotNone(delivery, "the signed clue was not delivered")
            self.assertEqual(delivery.sender, EEB)
            self.assertFalse(delivery.withheld)
            # The receiver proves who wrote it, without trusting the gateway.
            lc.verify_signature(delivery.notification, delivery.sender, self.public_key)
            sub.ack(delivery.sequence)
        finally:
            sub.close()

    def test_tampered_after_signing_is_refused(self):
        n = self.signer.sign(clue("tampered", f"PY-SIG-{RUN}-T"))
        n.summary = "changed after signing"
        error = self.refused(n)
        self.assertEqual(error.code(), grpc.StatusCode.UNAUTHENTICATED, error.details())

    def test_unsigned_is_refused(self):
        error = self.refused(clue("unsigned", f"PY-SIG-{RUN}-U"))
        self.assertEqual(error.code(), grpc.StatusCode.UNAUTHENTICATED, error.details())
        self.assertIn("notification.signature", error.details())

    def test_signed_with_another_agencys_key_is_refused(self):
        other = lc.Signer.from_pki(PKI, PSB)
        n = other.sign(clue("forged", f"PY-SIG-{RUN}-F"))
        # Claims to be EEB's key, signed with PSB's: it does not verify.
        n.sender = EEB
        n.signing_key_id = self.signer.key_id
        error = self.refused(n)
        self.assertEqual(error.code(), grpc.StatusCode.UNAUTHENTICATED, error.details())

    def test_signed_naming_another_agencys_key_is_refused(self):
        other = lc.Signer.from_pki(PKI, PSB)
        # Signed with PSB's key and naming it, published over EEB's
        # connection: a key registered for another agency.
        n = other.sign(clue("borrowed", f"PY-SIG-{RUN}-B"))
        n.sender = EEB
        error = self.refused(n)
        self.assertEqual(error.code(), grpc.StatusCode.PERMISSION_DENIED, error.details())


if __name__ == "__main__":
    unittest.main()
