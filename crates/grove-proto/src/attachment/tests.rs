//! The attachment cipher against its promises: round trips at every edge of padding and
//! segments, each tampering refused with its own error, and property tests of both.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;

const SEG: usize = SEGMENT_LEN;
const SEALED: usize = SEGMENT_LEN + TAG_LEN;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` bytes of a seeded pseudo-random file (no zero runs that padding could hide).
fn file(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed ^ 0xf11e).fill_bytes(&mut v);
    v
}

fn reference(done: EncryptedAttachment) -> AttachmentRef {
    done.into_ref(BlobId([9; 16]), "f.bin".into(), "application/octet-stream".into())
}

/// Encrypts `plain` pushed in pieces of `piece` bytes.
fn encrypt_in_pieces(plain: &[u8], piece: usize, seed: u64) -> (Vec<u8>, AttachmentRef) {
    let mut enc = AttachmentEncryptor::new(&mut rng(seed), plain.len() as u64).unwrap();
    let mut blob = Vec::new();
    for p in plain.chunks(piece.max(1)) {
        enc.push(p, &mut blob).unwrap();
        assert!(blob.len() % SEALED == 0, "only whole sealed segments come out before finish");
    }
    let done = enc.finish(&mut blob).unwrap();
    (blob, reference(done))
}

/// Decrypts `blob` pushed in pieces of `piece` bytes.
fn decrypt_in_pieces(r: &AttachmentRef, blob: &[u8], piece: usize) -> Result<Vec<u8>, AttachmentError> {
    let mut dec = AttachmentDecryptor::new(r)?;
    let mut out = Vec::new();
    for p in blob.chunks(piece.max(1)) {
        dec.push(p, &mut out)?;
    }
    dec.finish(&mut out)?;
    Ok(out)
}

#[test]
fn padded_lengths_follow_padme_with_a_4k_floor() {
    fn check(size: u64, expect: u64) {
        assert_eq!(padded_len(size), expect, "padded_len({size})");
    }
    check(0, 4096);
    check(1, 4096);
    check(4096, 4096);
    // 2^12..2^13: E = 12, S = 4, multiples of 2^8.
    check(4097, 4096 + 256);
    check(8191, 8192);
    // 2^15..2^16: multiples of 2^11.
    check(SEG as u64 - 1, SEG as u64);
    check(SEG as u64, SEG as u64);
    // 2^16..2^32: S = 5; 2^16..2^17 are multiples of 2^11.
    check(SEG as u64 + 1, SEG as u64 + 2048);
    // 100 MiB = 50 × 2 MiB: (98 MiB, 100 MiB] share one bucket.
    check(100 << 20, 100 << 20);
    check((98 << 20) + 1, 100 << 20);
    check(98 << 20, 98 << 20);
    assert_eq!(ciphertext_len(0), 4096 + 16);
    assert_eq!(ciphertext_len(SEG as u64), SEG as u64 + 16);
    assert_eq!(ciphertext_len(SEG as u64 + 1), SEG as u64 + 2048 + 2 * 16);
}

#[test]
fn round_trips_at_the_edges() {
    for (i, size) in
        [0, 1, 4095, 4096, 4097, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17, (3 << 20) + 5].into_iter().enumerate()
    {
        let plain = file(size, i as u64);
        for (enc_piece, dec_piece) in [(size.max(1), SEALED), (1000, 777), (SEG, SEALED + 1)] {
            let (blob, r) = encrypt_in_pieces(&plain, enc_piece, i as u64);
            assert_eq!(blob.len() as u64, ciphertext_len(size as u64), "size {size}");
            assert_eq!(r.size, size as u64);
            let back = decrypt_in_pieces(&r, &blob, dec_piece).unwrap();
            assert!(back == plain, "size {size}: round trip differs");
        }
    }
}

#[test]
fn padding_taken_in_steps_gives_the_same_blob_and_bounds_each_step() {
    // 1,000,000 bytes pad to 1,015,808: 15,808 bytes of padding, taken in steps of 5,000.
    let plain = file(1_000_000, 4);
    let (whole, _) = encrypt(&mut rng(8), &plain).unwrap();
    let mut enc = AttachmentEncryptor::new(&mut rng(8), plain.len() as u64).unwrap();
    let mut blob = Vec::new();
    assert_eq!(
        enc.pad(10, &mut blob),
        Err(AttachmentError::PlaintextTooShort { declared: 1_000_000, got: 0 }),
        "padding comes after the plaintext"
    );
    enc.push(&plain, &mut blob).unwrap();
    let mut left = padded_len(1_000_000) - 1_000_000;
    assert_eq!(left, 15_808);
    while left > 0 {
        let before = blob.len();
        let now = enc.pad(5000, &mut blob).unwrap();
        assert_eq!(now, left.saturating_sub(5000));
        assert!(blob.len() - before <= SEALED, "a step seals at most one segment here");
        left = now;
    }
    assert_eq!(enc.pad(5000, &mut blob), Ok(0));
    enc.finish(&mut blob).unwrap();
    assert!(blob == whole, "the same blob as padding at once");
}

#[test]
fn whole_buffer_helpers_round_trip_and_blobs_depend_only_on_the_rng() {
    let plain = file(100_000, 1);
    let (blob, done) = encrypt(&mut rng(5), &plain).unwrap();
    let (again, _) = encrypt(&mut rng(5), &plain).unwrap();
    let (other, other_done) = encrypt(&mut rng(6), &plain).unwrap();
    assert_eq!(blob, again, "same RNG, same blob");
    assert_ne!(blob, other, "a fresh key per file");
    assert_ne!(done.key, other_done.key);
    assert_eq!(done.digest.0, <[u8; 32]>::from(Sha256::digest(&blob)), "the digest is SHA-256 of the blob");
    assert_eq!(decrypt(&reference(done), &blob).unwrap(), plain);
}

/// A 4-segment blob (200,000 bytes pad to 200,704: three full segments and 4,096 bytes).
fn sample() -> (Vec<u8>, Vec<u8>, AttachmentRef) {
    let plain = file(200_000, 3);
    let (blob, r) = encrypt_in_pieces(&plain, 4096, 3);
    assert_eq!(blob.len(), 3 * SEALED + 4096 + TAG_LEN);
    (plain, blob, r)
}

fn segment(blob: &[u8], i: usize) -> &[u8] {
    &blob[i * SEALED..((i + 1) * SEALED).min(blob.len())]
}

/// Decrypting `blob` against `r` fails with `expect`, whatever the piece size, and hands out
/// no plaintext past the last segment that authenticated.
fn check_refused(r: &AttachmentRef, blob: &[u8], expect: AttachmentError) {
    for piece in [blob.len().max(1), SEALED, 1000] {
        assert_eq!(decrypt_in_pieces(r, blob, piece), Err(expect.clone()), "pieces of {piece}");
    }
}

#[test]
fn truncation_is_refused() {
    let (_, blob, r) = sample();
    let expected = blob.len() as u64;
    // Dropping the last segment, cutting inside one, or losing only its last byte.
    for cut in [3 * SEALED, 2 * SEALED + 5, blob.len() - 1, 0] {
        check_refused(&r, &blob[..cut], AttachmentError::BlobTruncated { expected, got: cut as u64 });
    }
}

#[test]
fn a_truncated_blob_with_a_matching_size_fails_at_the_new_last_segment() {
    // The sender (or anyone able to change the reference) claims a size whose blob is exactly
    // the first three segments: segment 2 was not sealed as the last one.
    let (_, blob, mut r) = sample();
    r.size = 3 * SEG as u64;
    assert_eq!(ciphertext_len(r.size), 3 * SEALED as u64);
    check_refused(&r, &blob[..3 * SEALED], AttachmentError::SegmentForged { index: 2 });
}

#[test]
fn reordered_or_swapped_segments_are_refused() {
    let (_, blob, r) = sample();
    let s: Vec<&[u8]> = (0..4).map(|i| segment(&blob, i)).collect();
    let reordered = [s[1], s[2], s[0], s[3]].concat();
    check_refused(&r, &reordered, AttachmentError::SegmentForged { index: 0 });
    let swapped = [s[0], s[2], s[1], s[3]].concat();
    check_refused(&r, &swapped, AttachmentError::SegmentForged { index: 1 });
    // A segment repeated in place of another.
    let repeated = [s[0], s[1], s[1], s[3]].concat();
    check_refused(&r, &repeated, AttachmentError::SegmentForged { index: 2 });
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    let (_, blob, r) = sample();
    for (at, index) in [(0, 0), (SEALED - 1, 0), (SEALED + 100, 1), (3 * SEALED + 7, 3), (blob.len() - 1, 3)] {
        let mut bad = blob.clone();
        bad[at] ^= 0x01;
        check_refused(&r, &bad, AttachmentError::SegmentForged { index });
    }
}

#[test]
fn appended_bytes_are_refused() {
    let (_, blob, r) = sample();
    let expected = blob.len() as u64;
    let mut one = blob.clone();
    one.push(0);
    check_refused(&r, &one, AttachmentError::BlobTooLong { expected });
    // A whole extra segment (a copy of the last one).
    let extended = [&blob[..], segment(&blob, 3)].concat();
    check_refused(&r, &extended, AttachmentError::BlobTooLong { expected });
}

#[test]
fn a_wrong_key_or_digest_or_size_is_refused() {
    let (_, blob, r) = sample();
    let mut wrong_key = r.clone();
    wrong_key.key.0[0] ^= 1;
    check_refused(&wrong_key, &blob, AttachmentError::SegmentForged { index: 0 });

    let mut wrong_digest = r.clone();
    wrong_digest.digest.0[31] ^= 1;
    check_refused(&wrong_digest, &blob, AttachmentError::DigestMismatch);

    // A size one byte short, same bucket: the last plaintext byte lands in the "padding".
    let mut short = r.clone();
    short.size -= 1;
    assert_eq!(ciphertext_len(short.size), blob.len() as u64);
    check_refused(&short, &blob, AttachmentError::BadPadding);

    // A size in another bucket: the blob has the wrong length.
    let mut bigger = r.clone();
    bigger.size = 300_000;
    check_refused(
        &bigger,
        &blob,
        AttachmentError::BlobTruncated { expected: ciphertext_len(300_000), got: blob.len() as u64 },
    );
    let mut smaller = r;
    smaller.size = 10;
    check_refused(&smaller, &blob, AttachmentError::BlobTooLong { expected: ciphertext_len(10) });
}

#[test]
fn nothing_comes_out_of_a_forged_segment_and_a_failed_decryptor_stays_failed() {
    let (plain, mut blob, r) = sample();
    blob[SEALED + 3] ^= 0x80;
    let mut dec = AttachmentDecryptor::new(&r).unwrap();
    let mut out = Vec::new();
    assert_eq!(dec.push(&blob[..2 * SEALED], &mut out), Ok(()), "segment 1 is not opened until more comes");
    assert_eq!(out, plain[..SEG], "segment 0 authenticated");
    assert_eq!(dec.push(&blob[2 * SEALED..], &mut out), Err(AttachmentError::SegmentForged { index: 1 }));
    assert_eq!(out.len(), SEG, "nothing of the forged segment");
    assert_eq!(dec.push(&[], &mut out), Err(AttachmentError::Failed));
    assert_eq!(dec.finish(&mut out), Err(AttachmentError::Failed));
    assert_eq!(out.len(), SEG);
}

#[test]
fn the_encryptor_refuses_more_or_less_than_its_size() {
    let mut enc = AttachmentEncryptor::new(&mut rng(1), 10).unwrap();
    let mut out = Vec::new();
    enc.push(&[1; 6], &mut out).unwrap();
    assert_eq!(enc.push(&[1; 5], &mut out), Err(AttachmentError::PlaintextTooLong { declared: 10 }));
    enc.push(&[1; 3], &mut out).unwrap();
    assert_eq!(enc.finish(&mut out), Err(AttachmentError::PlaintextTooShort { declared: 10, got: 9 }));
    assert_eq!(
        AttachmentEncryptor::new(&mut rng(1), MAX_SIZE + 1).unwrap_err(),
        AttachmentError::TooLarge { size: MAX_SIZE + 1 }
    );
    // The largest size still has a 32-bit segment counter.
    assert!(AttachmentEncryptor::new(&mut rng(1), MAX_SIZE).is_ok());
    let mut huge = reference(encrypt(&mut rng(1), b"x").unwrap().1);
    huge.size = u64::MAX;
    assert_eq!(AttachmentDecryptor::new(&huge).unwrap_err(), AttachmentError::TooLarge { size: u64::MAX });
}

#[test]
fn debug_output_shows_no_key() {
    let enc = AttachmentEncryptor::with_key(AttachmentKey([0x5a; 32]), 5).unwrap();
    let (_, done) = encrypt(&mut rng(2), b"hello").unwrap();
    let key_bytes = format!("{:?}", done.key.0);
    let r = reference(done);
    let dec = AttachmentDecryptor::new(&r).unwrap();
    for text in [format!("{enc:?}"), format!("{r:?}"), format!("{dec:?}")] {
        assert!(!text.contains("90, 90") && !text.contains(&key_bytes[1..20]), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn padding_hides_little_and_costs_little(size in 0u64..MAX_SIZE) {
        let p = padded_len(size);
        prop_assert!(p >= size.max(MIN_PADDED_LEN));
        prop_assert!(p - size.max(MIN_PADDED_LEN) < size.max(MIN_PADDED_LEN) / 16 + 1);
        // A multiple of 2^(E-S) with its top bit at E or E+1: S + 1 significant bits at most,
        // S = 4 below 64 KiB, 5 below 4 GiB, 6 up to MAX_SIZE. So 2^S buckets per doubling.
        let significant = 64 - p.leading_zeros() - p.trailing_zeros();
        prop_assert!(significant <= if p < (1 << 16) { 5 } else if p <= (1 << 32) { 6 } else { 7 }, "{} has {} bits", p, significant);
    }

    #[test]
    fn any_file_in_any_pieces_round_trips(size in 0usize..300_000, enc_piece in 1usize..100_000, dec_piece in 1usize..100_000, seed: u64) {
        let plain = file(size, seed);
        let (blob, r) = encrypt_in_pieces(&plain, enc_piece, seed);
        prop_assert_eq!(blob.len() as u64, ciphertext_len(size as u64));
        prop_assert!(decrypt_in_pieces(&r, &blob, dec_piece).unwrap() == plain);
    }
}
