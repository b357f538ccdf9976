#!/usr/bin/env python3
"""End-to-end test of liandong_client.py against a REAL gateway.

Environment:
  LIANDONG_GATEWAY  host:port of the gateway, e.g. localhost:7443 (the host
                    must match the gateway certificate: localhost for the dev PKI)
  LIANDONG_PKI      the dev PKI directory: ca.crt and agencies/<id>.crt/.key
                    for the agencies of deploy/dev/agencies.toml
  LIANDONG_STUBS    (optional) directory holding the generated liandong/v1
                    modules; generated into a temp dir when absent

Runs with the standard library only: python3 test_client.py [-v]. Every
test uses its own case references and subscription names (with a random run
id), so the suite can run against a gateway that already holds data.
"""

import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

import liandong_client as lc  # noqa: E402
from liandong_client import opt, pb  # noqa: E402

GATEWAY = os.environ.get("LIANDONG_GATEWAY", "")
PKI = os.environ.get("LIANDONG_PKI", "")
RUN = uuid.uuid4().hex[:8]
WAIT = 10.0  # seconds to wait for something that must arrive
QUIET = 1.0  # seconds of silence that show nothing more arrives

EEB = "cz-eeb-xiangyuan"  # 襄垣 environment bureau: publishes clues
PSB = "cz-psb-xiangyuan"  # 襄垣 police: receives them
PSB_CITY = "cz-psb"
PRESS = "cz-press-office"  # observer: public content only

_clients = {}


def client(agency):
    if agency not in _clients:
        _clients[agency] = lc.Client.from_pki(GATEWAY, PKI, agency)
    return _clients[agency]


def tearDownModule():
    for c in _clients.values():
        c.close()


def case(name):
    return f"PY-{RUN}-{name}"


def clue(nid, case_ref, level=opt.CONFIDENTIALITY_INTERNAL, recipients=(), summary=None):
    """A well-formed clue from the 襄垣 environment bureau."""
    n = pb.Notification(
        notification_id=f"{RUN}-{nid}",
        case_ref=case_ref,
        event=pb.EVENT_TYPE_CLUE_SHARED,
        confidentiality=level,
        recipients=list(recipients),
        region="140423",
        summary=summary or f"线索 {nid}：废机油倾倒",
    )
    if recipients:
        n.confidentiality_note = "侦查阶段，防止证据灭失"
    n.occurred_at.FromJsonString("2026-11-20T08:30:00Z")
    return n


def publish_clues(names, case_ref):
    """Publishes one INTERNAL clue per name; returns their sequences."""
    return [client(EEB).publish(clue(name, case_ref)).sequence for name in names]


class ClientTest(unittest.TestCase):
    def assertRefused(self, code, field_or_text, call, *args):
        with self.assertRaises(grpc.RpcError) as caught:
            call(*args)
        error = caught.exception
        self.assertEqual(error.code(), code, error.details())
        self.assertIn(field_or_text, error.details())
        return error

    def take(self, sub, count):
        """Receives `count` deliveries, acknowledging each once handled."""
        got = []
        for _ in range(count):
            delivery = sub.next(WAIT)
            self.assertIsNotNone(delivery, f"expected {count} deliveries, got {len(got)}")
            got.append(delivery)
            sub.ack(delivery.sequence)
        return got

    # -- connection -------------------------------------------------------

    def test_health_is_serving(self):
        self.assertEqual(client(EEB).health(), 1)  # liandong.v1.Exchange
        self.assertEqual(client(EEB).health(""), 1)  # the server as a whole
        with self.assertRaises(grpc.RpcError) as caught:
            client(EEB).health("no.such.Service")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_connection_without_client_certificate_is_refused(self):
        ca, _, _ = lc.pki_paths(PKI, EEB)
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        with grpc.secure_channel(GATEWAY, credentials) as channel:
            anonymous = lc.Client(channel, timeout=5)
            with self.assertRaises(grpc.RpcError) as caught:
                anonymous.publish(clue("anon", case("anon")), retries=0)
        # The TLS handshake fails (the gateway requires a certificate):
        # a transport error, not an answer of the service.
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)

    # -- publishing -------------------------------------------------------

    def test_publish_from_json_and_identical_republish(self):
        text = f"""{{
          "notification_id": "{RUN}-json-1",
          "case_ref": "{case('json')}",
          "event": "EVENT_TYPE_CASE_TRANSFERRED",
          "confidentiality": "CONFIDENTIALITY_RESTRICTED",
          "recipients": ["{PSB}"],
          "confidentiality_note": "涉案人员尚未到案，公开可能导致证据灭失",
          "region": "140423",
          "occurred_at": "2026-11-20T08:30:00Z",
          "summary": "涉嫌非法倾倒危险废物案件移送",
          "body": {{"title": "非法倾倒案", "parties": [{{"role": "company", "name": "某化工有限公司"}}]}}
        }}"""
        first = client(EEB).publish(lc.notification_from_json(text))
        self.assertEqual(first.notification_id, f"{RUN}-json-1")
        self.assertFalse(first.duplicate)
        self.assertGreater(first.sequence, 0)
        self.assertTrue(first.HasField("received_at"))

        again = client(EEB).publish(lc.notification_from_json(text))
        self.assertTrue(again.duplicate)
        self.assertEqual(again.sequence, first.sequence)
        self.assertEqual(again.received_at, first.received_at)

        # Naming oneself as sender is the same content: the gateway fills
        # in the proven sender before comparing.
        named = lc.notification_from_json(text)
        named.sender = EEB
        self.assertEqual(client(EEB).publish(named).sequence, first.sequence)

    def test_json_form_is_the_proto3_mapping(self):
        n = lc.notification_from_json(
            '{"notificationId": "x", "case_ref": "C-1", "event": "EVENT_TYPE_CLUE_SHARED",'
            ' "confidentiality": "CONFIDENTIALITY_PUBLIC", "occurred_at": "2026-11-20T16:30:00+08:00"}'
        )
        self.assertEqual(n.notification_id, "x")
        self.assertEqual(n.confidentiality, opt.CONFIDENTIALITY_PUBLIC)
        self.assertEqual(n.occurred_at.ToJsonString(), "2026-11-20T08:30:00Z")
        with self.assertRaises(json_format.ParseError):
            lc.notification_from_json('{"notification_id": "x", "colour": "red"}')
        with self.assertRaises(json_format.ParseError):
            lc.notification_from_json('{"event": "EVENT_TYPE_NO_SUCH_EVENT"}')

    def test_same_id_with_other_content_is_failed_precondition(self):
        n = clue("reuse", case("reuse"))
        client(EEB).publish(n)
        n.summary = "改过的摘要"
        self.assertRefused(grpc.StatusCode.FAILED_PRECONDITION, n.notification_id, client(EEB).publish, n)

    def test_refusals_name_the_field_and_store_nothing(self):
        c = client(EEB)
        ref = case("refused")
        unspecified = clue("unspecified", ref, level=opt.CONFIDENTIALITY_UNSPECIFIED)
        self.assertRefused(grpc.StatusCode.INVALID_ARGUMENT, "notification.confidentiality", c.publish, unspecified)

        no_recipients = clue("no-recipients", ref, level=opt.CONFIDENTIALITY_RESTRICTED)
        no_recipients.confidentiality_note = "侦查阶段"
        self.assertRefused(grpc.StatusCode.INVALID_ARGUMENT, "notification.recipients", c.publish, no_recipients)

        unknown = clue("unknown-recipient", ref, level=opt.CONFIDENTIALITY_RESTRICTED, recipients=["cz-nobody"])
        self.assertRefused(grpc.StatusCode.INVALID_ARGUMENT, "notification.recipients[0]", c.publish, unknown)

        bad_region = clue("bad-region", ref)
        bad_region.region = "14042"
        self.assertRefused(grpc.StatusCode.INVALID_ARGUMENT, "notification.region", c.publish, bad_region)

        forged = clue("forged", ref)
        forged.sender = PSB
        self.assertRefused(grpc.StatusCode.PERMISSION_DENIED, "notification.sender", c.publish, forged)

        self.assertRefused(grpc.StatusCode.NOT_FOUND, ref, c.get_case, ref)

    def test_publish_stream_answers_in_order(self):
        ref = case("stream")
        notifications = [clue(f"stream-{i}", ref) for i in range(5)]
        receipts = list(client(EEB).publish_stream(notifications))
        self.assertEqual([r.notification_id for r in receipts], [n.notification_id for n in notifications])
        sequences = [r.sequence for r in receipts]
        self.assertEqual(sequences, sorted(set(sequences)))

        # A refusal ends the stream with its status, after the receipts
        # of the requests before it.
        bad = clue("stream-bad", ref, level=opt.CONFIDENTIALITY_UNSPECIFIED)
        stream = client(EEB).publish_stream([clue("stream-5", ref), bad, clue("stream-6", ref)])
        self.assertEqual(next(stream).notification_id, f"{RUN}-stream-5")
        with self.assertRaises(grpc.RpcError) as caught:
            next(stream)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    # -- subscribing ------------------------------------------------------

    def test_subscribe_ack_and_resume_without_loss_or_reorder(self):
        ref = case("resume")
        name = f"py-{RUN}-resume"
        sequences = publish_clues([f"resume-{i}" for i in range(6)], ref)

        sub = client(PSB_CITY).subscribe(name, case_ref_prefix=ref)
        handled = self.take(sub, 3)
        self.assertEqual([d.sequence for d in handled], sequences[:3])
        for d in handled:
            self.assertEqual(d.sender, EEB)
            self.assertEqual(d.attempt, 1)
            self.assertFalse(d.withheld)
            self.assertEqual(d.notification.sender, EEB)
        unacked = sub.next(WAIT)  # received, not acknowledged: must come again
        self.assertEqual(unacked.sequence, sequences[3])
        rest = sub.close()  # half-close and drain: the three acks are processed
        self.assertEqual([d.sequence for d in rest], sequences[4:])

        sequences += publish_clues(["resume-6", "resume-7"], ref)  # while away

        sub = client(PSB_CITY).subscribe(name, case_ref_prefix=ref, start="now")  # start ignored: it exists
        resumed = self.take(sub, 5)
        self.assertEqual([d.sequence for d in resumed], sequences[3:])
        self.assertEqual([d.notification.notification_id for d in resumed],
                         [f"{RUN}-resume-{i}" for i in range(3, 8)])
        self.assertIsNone(sub.next(QUIET))
        self.assertEqual(sub.close(), [])

        # Everything acknowledged: a third connection gets nothing old.
        sub = client(PSB_CITY).subscribe(name, case_ref_prefix=ref)
        self.assertIsNone(sub.next(QUIET))
        sub.close()

        # The filter is fixed at creation.
        other = client(PSB_CITY).subscribe(name, case_ref_prefix=ref + "-other")
        with self.assertRaises(grpc.RpcError) as caught:
            other.next(WAIT)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)

    def test_unacknowledged_delivery_comes_again_after_ack_timeout(self):
        ref = case("redeliver")
        [sequence] = publish_clues(["redeliver-0"], ref)
        sub = client(PSB).subscribe(f"py-{RUN}-redeliver", case_ref_prefix=ref, ack_timeout_seconds=1)
        first = sub.next(WAIT)
        self.assertEqual((first.sequence, first.attempt), (sequence, 1))
        again = sub.next(WAIT)
        self.assertEqual((again.sequence, again.attempt), (sequence, 2))
        sub.ack(sequence)
        self.assertIsNone(sub.next(2.5), "acknowledged: not sent again")
        sub.close()

    def test_max_in_flight_bounds_unacknowledged_deliveries(self):
        ref = case("window")
        sequences = publish_clues([f"window-{i}" for i in range(3)], ref)
        sub = client(PSB).subscribe(f"py-{RUN}-window", case_ref_prefix=ref, max_in_flight=2)
        first, second = sub.next(WAIT), sub.next(WAIT)
        self.assertEqual([first.sequence, second.sequence], sequences[:2])
        self.assertIsNone(sub.next(QUIET), "window full: nothing more until an ack")
        sub.ack(first.sequence)
        third = sub.next(WAIT)
        self.assertEqual(third.sequence, sequences[2])
        sub.ack(second.sequence, third.sequence)
        self.assertEqual(sub.close(), [])

    def test_start_positions_and_filters(self):
        ref = case("start")
        [old] = publish_clues(["start-0"], ref)
        from_now = client(PSB).subscribe(f"py-{RUN}-now", case_ref_prefix=ref, start="now")
        after = client(PSB).subscribe(f"py-{RUN}-after", case_ref_prefix=ref, start=old - 1)
        # Another event type, same case: filtered out by `events`.
        events = client(PSB).subscribe(f"py-{RUN}-events", case_ref_prefix=ref, events=["CASE_TRANSFERRED"])
        # `now` is fixed when the subscription is created: wait for the
        # open to reach the gateway before publishing.
        self.assertIsNone(from_now.next(QUIET))
        [new] = publish_clues(["start-1"], ref)

        self.assertEqual([d.sequence for d in self.take(from_now, 1)], [new])
        self.assertEqual([d.sequence for d in self.take(after, 2)], [old, new])
        self.assertIsNone(events.next(QUIET))
        for sub in (from_now, after, events):
            sub.close()

        beyond = client(PSB).subscribe(f"py-{RUN}-beyond", start=new + 1_000_000)
        with self.assertRaises(grpc.RpcError) as caught:
            beyond.next(WAIT)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("open.start.after_sequence", caught.exception.details())

    def test_newer_connection_takes_the_subscription_over(self):
        ref = case("takeover")
        [sequence] = publish_clues(["takeover-0"], ref)
        name = f"py-{RUN}-takeover"
        older = client(PSB).subscribe(name, case_ref_prefix=ref)
        self.assertEqual(older.next(WAIT).sequence, sequence)  # not acked

        newer = client(PSB).subscribe(name, case_ref_prefix=ref)
        with self.assertRaises(grpc.RpcError) as caught:
            while older.next(WAIT) is not None:
                pass
        self.assertEqual(caught.exception.code(), grpc.StatusCode.ABORTED)
        self.assertEqual([d.sequence for d in self.take(newer, 1)], [sequence])
        self.assertEqual(newer.close(), [])

    # -- confidentiality and GetCase --------------------------------------

    def test_restricted_content_and_get_case(self):
        ref = case("restricted")
        public = client(EEB).publish(clue("public", ref, level=opt.CONFIDENTIALITY_PUBLIC))
        restricted_clue = clue("restricted", ref, level=opt.CONFIDENTIALITY_RESTRICTED,
                               recipients=[PSB], summary="CANARY 限制级线索")
        restricted = client(EEB).publish(restricted_clue)

        view = client(PSB).get_case(ref)
        self.assertEqual(view.case_ref, ref)
        self.assertEqual([d.sequence for d in view.timeline], [public.sequence, restricted.sequence])
        self.assertEqual([d.attempt for d in view.timeline], [0, 0])
        self.assertFalse(view.timeline[1].withheld)
        self.assertEqual(view.timeline[1].notification.summary, restricted_clue.summary)

        # The press office (an observer, not a recipient) sees the public
        # clue only, in GetCase and in a subscription.
        press_view = client(PRESS).get_case(ref)
        self.assertEqual([d.sequence for d in press_view.timeline], [public.sequence])
        self.assertNotIn("CANARY", str(press_view))
        press = client(PRESS).subscribe(f"py-{RUN}-press", case_ref_prefix=ref)
        self.assertEqual([d.sequence for d in self.take(press, 1)], [public.sequence])
        self.assertIsNone(press.next(QUIET))
        press.close()

        self.assertRefused(grpc.StatusCode.INVALID_ARGUMENT, "case_ref", client(PSB).get_case, "not a case ref")
        self.assertRefused(grpc.StatusCode.NOT_FOUND, "", client(PSB).get_case, case("no-such-case"))

    def test_get_case_follows_every_page(self):
        ref = case("paged")
        sequences = publish_clues([f"paged-{i}" for i in range(5)], ref)

        # The gateway answers two entries a page: three pages.
        first = client(PSB).stub.GetCase(pb.GetCaseRequest(case_ref=ref, page_size=2), timeout=WAIT)
        self.assertEqual([d.sequence for d in first.timeline], sequences[:2])
        self.assertNotEqual(first.next_page_token, "")

        view = client(PSB).get_case(ref, page_size=2)
        self.assertEqual(view.case_ref, ref)
        self.assertEqual([d.sequence for d in view.timeline], sequences)
        self.assertEqual(view.next_page_token, "")
        self.assertEqual(client(PSB).get_case(ref), view)


if __name__ == "__main__":
    if not GATEWAY or not PKI:
        sys.exit("set LIANDONG_GATEWAY (host:port) and LIANDONG_PKI (dev PKI directory)")
    unittest.main()
