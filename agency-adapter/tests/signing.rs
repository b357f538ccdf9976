//! The signature the adapter puts on each notification verifies with an
//! independent Ed25519 implementation (ed25519-dalek, not ring) over bytes
//! built here straight from the rules of `docs/SIGNING.md`, with a
//! hand-written protobuf writer rather than prost: what another language
//! would do to check a Liandong signature.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use liandong_adapter::daemon::accept::prepare;
use liandong_adapter::signer::Signer;
use liandong_core::domain::AgencyId;
use liandong_core::json::from_json;
use liandong_core::pb;

/// A protobuf writer for exactly what SIGNING.md allows: fields in
/// ascending number order, defaults omitted, length-delimited strings and
/// messages, varints.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn tag(&mut self, field: u64, wire_type: u64) {
        self.varint(field << 3 | wire_type);
    }
    fn bytes(&mut self, field: u64, value: &[u8]) {
        if !value.is_empty() {
            self.tag(field, 2);
            self.varint(value.len() as u64);
            self.0.extend_from_slice(value);
        }
    }
    fn string(&mut self, field: u64, value: &str) {
        self.bytes(field, value.as_bytes());
    }
    fn number(&mut self, field: u64, value: u64) {
        if value != 0 {
            self.tag(field, 0);
            self.varint(value);
        }
    }
    /// A present message field: always written, even when empty.
    fn message(&mut self, field: u64, inner: Writer) {
        self.tag(field, 2);
        self.varint(inner.0.len() as u64);
        self.0.extend_from_slice(&inner.0);
    }
}

/// SIGNING.md, step by step, for the fields this notification uses.
fn documented_signing_bytes(n: &pb::Notification, sender: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.string(1, &n.notification_id);
    w.string(2, &n.case_ref);
    w.number(3, n.event as u64);
    w.number(4, n.confidentiality as u64);
    for recipient in &n.recipients {
        // Repeated strings: one record each, in order, even if empty.
        w.tag(5, 2);
        w.varint(recipient.len() as u64);
        w.0.extend_from_slice(recipient.as_bytes());
    }
    w.string(6, &n.confidentiality_note);
    w.string(7, &n.region);
    if let Some(ts) = &n.occurred_at {
        let mut t = Writer::default();
        t.number(1, ts.seconds as u64);
        t.number(2, ts.nanos as u64);
        w.message(8, t);
    }
    w.string(9, &n.summary);
    if let Some(body) = &n.body {
        let mut b = Writer::default();
        b.string(1, &body.title);
        b.string(2, &body.description);
        for party in &body.parties {
            let mut p = Writer::default();
            p.string(1, &party.role);
            p.string(2, &party.name);
            p.string(3, &party.identifier);
            p.string(4, &party.contact);
            b.message(7, p);
        }
        for measurement in &body.measurements {
            let mut m = Writer::default();
            m.string(1, &measurement.name);
            m.string(2, &measurement.value);
            m.string(3, &measurement.unit);
            b.message(11, m);
        }
        w.message(10, b);
    }
    w.string(11, sender); // the signing agency, whatever the message says
    w.string(12, &n.contact);
    // 13 signature and 14 signing_key_id: left out (cleared).
    let mut out = b"liandong.v1.Notification\n".to_vec();
    out.extend_from_slice(&w.0);
    out
}

const NOTIFICATION: &str = r#"{
  "notification_id": "xy-eeb-2026-0042-transfer",
  "case_ref": "CZ-XY-2026-HW-0042",
  "event": "EVENT_TYPE_CASE_TRANSFERRED",
  "confidentiality": "CONFIDENTIALITY_RESTRICTED",
  "recipients": ["cz-psb-xiangyuan", "cz-procuratorate-xiangyuan"],
  "confidentiality_note": "涉案人员尚未到案，公开可能导致证据灭失",
  "region": "140423",
  "occurred_at": "2026-11-20T08:30:00.250Z",
  "summary": "涉嫌非法倾倒危险废物案件移送",
  "contact": "执法大队 0355-2000003",
  "body": {
    "title": "关于移送某化工公司涉嫌污染环境案的函",
    "description": "2026年11月，在襄垣县境内发现非法倾倒废矿物油约12.5吨。",
    "parties": [{"role": "company", "name": "某化工有限公司"}, {"role": "suspect", "name": "张某", "identifier": "1404231980"}],
    "measurements": [{"name": "waste_tonnes", "value": "12.5", "unit": "t"}]
  }
}"#;

#[test]
fn the_adapters_signature_verifies_with_ed25519_dalek_over_the_documented_bytes() {
    let key = liandong_certs::SigningKey::generate().unwrap();
    let agency = AgencyId::parse("agency", "cz-eeb-xiangyuan").unwrap();
    let signer = Signer::from_pkcs8(agency, key.pkcs8_der()).unwrap();
    let input: pb::Notification = from_json(NOTIFICATION).unwrap();
    let signed = prepare(&signer, input).unwrap().signed;

    // What travels: decode the bytes as a receiver would get them.
    let received = pb::Notification::decode(signed.encode_to_vec().as_slice()).unwrap();
    let message = documented_signing_bytes(&received, "cz-eeb-xiangyuan");
    assert_eq!(
        message,
        liandong_core::signing::signing_bytes(&received, "cz-eeb-xiangyuan"),
        "the library's bytes are the documented bytes"
    );

    let public = VerifyingKey::from_bytes(&key.public_key()).unwrap();
    let signature = Signature::from_slice(&received.signature).unwrap();
    public.verify_strict(&message, &signature).unwrap();
    public.verify(&message, &signature).unwrap();

    // The key id is the agency and the SHA-256 prefix of the raw key.
    let digest = hex::encode(Sha256::digest(key.public_key()));
    assert_eq!(
        received.signing_key_id,
        format!("cz-eeb-xiangyuan:{}", &digest[..16])
    );

    // Anything changed, or another sender, fails.
    let mut changed = received.clone();
    changed.summary.push('!');
    assert!(
        public
            .verify_strict(
                &documented_signing_bytes(&changed, "cz-eeb-xiangyuan"),
                &signature
            )
            .is_err()
    );
    assert!(
        public
            .verify_strict(&documented_signing_bytes(&received, "cz-eeb"), &signature)
            .is_err()
    );
}
