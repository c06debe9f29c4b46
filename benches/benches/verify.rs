//! Verification alone, against the same bytes' raw SHA-256 (the floor), a hand-written
//! verifier of the kind users write, and the `svix` crate's verifier.
//!
//! `cargo bench -p ringyo-webhook-benches --bench verify` prints criterion's results, then a
//! table of medians, GB/s and ratios from this run. See benches/README.md.

#[path = "support/report.rs"]
mod report;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use ringyo_webhook::{Signature, Verifier};
use sha2::{Digest, Sha256};

const GROUP: &str = "verify";
const SECRET: &str = "whsec_a1b2c3d4e5f6g7h8i9j0";
/// An svix secret: `whsec_` and base64 of the key bytes, as svix requires.
const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIZES: [(&str, usize); 4] = [
    ("1KiB", 1 << 10),
    ("16KiB", 16 << 10),
    ("256KiB", 256 << 10),
    ("1MiB", 1 << 20),
];

/// What users write by hand: a key schedule per call, hex-encode, `==`.
fn hand_written(secret: &str, body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == header
}

fn bench(c: &mut Criterion) {
    let verifier = Verifier::new(SECRET).unwrap();
    let svix = svix::webhooks::Webhook::new(SVIX_SECRET).unwrap();
    let mut group = c.benchmark_group(GROUP);
    for (name, size) in SIZES {
        // Hashing does not depend on content; svix needs UTF-8, so ASCII it is.
        let body = vec![b'x'; size];
        let header = verifier.sign(&body).to_string();
        assert!(hand_written(SECRET, &body, &header));

        let timestamp = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
        let svix_signature = svix.sign("msg_1", timestamp, &body).unwrap();
        let mut svix_headers = http::HeaderMap::new();
        svix_headers.insert("svix-id", "msg_1".parse().unwrap());
        svix_headers.insert("svix-timestamp", timestamp.to_string().parse().unwrap());
        svix_headers.insert("svix-signature", svix_signature.parse().unwrap());
        assert!(svix.verify(&body, &svix_headers).is_ok());

        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha256_floor", name), &body, |b, body| {
            b.iter(|| Sha256::digest(black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("ringyo_webhook", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let signature = Signature::parse(black_box(&header)).unwrap();
                    verifier.verify(black_box(body), &signature).unwrap()
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("hand_written", name), &body, |b, body| {
            b.iter(|| assert!(hand_written(SECRET, black_box(body), black_box(&header))))
        });
        group.bench_with_input(BenchmarkId::new("svix", name), &body, |b, body| {
            b.iter(|| {
                svix.verify(black_box(body), black_box(&svix_headers))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn main() {
    report::run(
        bench,
        GROUP,
        &SIZES,
        &["sha256_floor", "ringyo_webhook", "hand_written", "svix"],
        &[
            ("ringyo_webhook", "sha256_floor"),
            ("ringyo_webhook", "hand_written"),
            ("ringyo_webhook", "svix"),
        ],
    );
}
