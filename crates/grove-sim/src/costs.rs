//! Per-operation costs of the three encryption schemes: exact byte sizes of real messages and
//! CPU times, as measured by [`crate::measure`] (or fixed by hand in tests).
//!
//! Olm and Sender Keys costs do not depend on the group size (one ratchet step, one AEAD, one
//! signature), so they are measured once. MLS costs depend on N: they are measured at each
//! N up to 1,000 and, beyond the largest measured N, extrapolated from a least-squares fit
//! ([`MlsCosts::at`] says which).

/// Olm (vodozemac) costs: one pairwise ciphertext.
#[derive(Clone, Debug, PartialEq)]
pub struct OlmCosts {
    /// Bytes of an Olm message (normal, not pre-key) carrying a 100-byte group message.
    pub message_bytes: u64,
    /// Bytes of an Olm message carrying a 100-byte membership notice (same as a message).
    pub notice_bytes: u64,
    /// Bytes of an Olm message carrying one Sender Keys distribution.
    pub distribution_bytes: u64,
    /// Bytes of the pre-key message that opens a session (carrying a 100-byte hello).
    pub prekey_bytes: u64,
    /// CPU to encrypt one 100-byte Olm message, µs.
    pub encrypt_us: f64,
    /// CPU to decrypt one 100-byte Olm message, µs.
    pub decrypt_us: f64,
    /// CPU to open an outbound session and encrypt its pre-key message, µs.
    pub session_out_us: f64,
    /// CPU to open an inbound session from a pre-key message (decrypting it), µs.
    pub session_in_us: f64,
}

/// Sender Keys (grove_proto::senderkeys) costs.
#[derive(Clone, Debug, PartialEq)]
pub struct SenderKeyCosts {
    /// Bytes of one 100-byte application message.
    pub message_bytes: u64,
    /// Bytes of a serialised `SenderKeyDistribution` (before Olm).
    pub distribution_bytes: u64,
    /// CPU to encrypt and sign one message, µs.
    pub encrypt_us: f64,
    /// CPU to verify and decrypt one message, µs.
    pub decrypt_us: f64,
    /// CPU to make a new chain and its distribution, µs.
    pub new_chain_us: f64,
    /// CPU to install a received distribution, µs.
    pub install_us: f64,
}

/// MLS (grove_proto::mls::engine) costs at one group size.
#[derive(Clone, Debug, PartialEq)]
pub struct MlsPoint {
    /// Group size.
    pub n: u64,
    /// Bytes of one 100-byte application message (PrivateMessage).
    pub message_bytes: u64,
    /// CPU to encrypt one message, µs.
    pub encrypt_us: f64,
    /// CPU to decrypt one message, µs.
    pub decrypt_us: f64,
    /// Bytes of a self-update commit (the PCS heal).
    pub update_bytes: u64,
    /// CPU to make a self-update commit, µs.
    pub update_us: f64,
    /// Bytes of a commit removing one member.
    pub remove_bytes: u64,
    /// CPU to make a remove commit, µs.
    pub remove_us: f64,
    /// Bytes of a commit adding one member.
    pub add_bytes: u64,
    /// CPU to make an add commit, µs.
    pub add_us: f64,
    /// CPU for a member to process a commit (median of update, remove and add), µs.
    pub process_us: f64,
    /// Bytes of the Welcome for one added member.
    pub welcome_bytes: u64,
    /// Bytes of the public ratchet tree the joiner fetches.
    pub tree_bytes: u64,
    /// CPU for the joiner to join (Welcome + tree), µs.
    pub join_us: f64,
}

/// MLS costs at every measured N.
#[derive(Clone, Debug, PartialEq)]
pub struct MlsCosts {
    /// Measured points, in increasing N.
    pub points: Vec<MlsPoint>,
}

/// Whether a figure rests on a measurement at that N or on an extrapolation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// Every per-operation cost was measured (at that N, or is independent of N).
    Measured,
    /// Some per-operation cost comes from a fit of the measured points.
    Extrapolated,
}

/// Least-squares fit of `y = a + b·f(x)`.
fn fit(points: &[(f64, f64)], f: impl Fn(f64) -> f64) -> (f64, f64) {
    let k = points.len() as f64;
    if points.len() < 2 {
        return (points.first().map_or(0.0, |p| p.1), 0.0);
    }
    let xs: Vec<f64> = points.iter().map(|p| f(p.0)).collect();
    let mx = xs.iter().sum::<f64>() / k;
    let my = points.iter().map(|p| p.1).sum::<f64>() / k;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(points).map(|(x, p)| (x - mx) * (p.1 - my)).sum();
    let b = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (my - b * mx, b)
}

impl MlsCosts {
    /// Costs at `n`: the measured point if there is one, else a fit of the measured points
    /// (sizes of commits and messages: `a + b·log2 N`; the tree, every CPU time: `a + b·N`).
    /// Fitted values never go below the largest measured value (costs do not shrink with N).
    pub fn at(&self, n: u64) -> Option<(MlsPoint, Provenance)> {
        if let Some(p) = self.points.iter().find(|p| p.n == n) {
            return Some((p.clone(), Provenance::Measured));
        }
        let last = self.points.last()?;
        let x = n as f64;
        let log = |f: fn(&MlsPoint) -> u64| -> u64 {
            let pts: Vec<(f64, f64)> = self.points.iter().map(|p| (p.n as f64, f(p) as f64)).collect();
            let (a, b) = fit(&pts, f64::log2);
            ((a + b * x.log2()).round().max(0.0) as u64).max(f(last))
        };
        let lin_b = |f: fn(&MlsPoint) -> u64| -> u64 {
            let pts: Vec<(f64, f64)> = self.points.iter().map(|p| (p.n as f64, f(p) as f64)).collect();
            let (a, b) = fit(&pts, |v| v);
            ((a + b * x).round().max(0.0) as u64).max(f(last))
        };
        let lin_t = |f: fn(&MlsPoint) -> f64| -> f64 {
            let pts: Vec<(f64, f64)> = self.points.iter().map(|p| (p.n as f64, f(p))).collect();
            let (a, b) = fit(&pts, |v| v);
            (a + b * x).max(f(last))
        };
        let p = MlsPoint {
            n,
            message_bytes: log(|p| p.message_bytes),
            encrypt_us: lin_t(|p| p.encrypt_us),
            decrypt_us: lin_t(|p| p.decrypt_us),
            update_bytes: log(|p| p.update_bytes),
            update_us: lin_t(|p| p.update_us),
            remove_bytes: log(|p| p.remove_bytes),
            remove_us: lin_t(|p| p.remove_us),
            add_bytes: log(|p| p.add_bytes),
            add_us: lin_t(|p| p.add_us),
            process_us: lin_t(|p| p.process_us),
            welcome_bytes: log(|p| p.welcome_bytes),
            tree_bytes: lin_b(|p| p.tree_bytes),
            join_us: lin_t(|p| p.join_us),
        };
        Some((p, Provenance::Extrapolated))
    }
}

/// Everything the model needs: the three schemes' per-operation costs.
#[derive(Clone, Debug, PartialEq)]
pub struct CostTable {
    /// Pairwise (Olm).
    pub olm: OlmCosts,
    /// Sender Keys.
    pub sender_keys: SenderKeyCosts,
    /// MLS, per N.
    pub mls: MlsCosts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(n: u64, commit: u64, cpu: f64) -> MlsPoint {
        MlsPoint {
            n,
            message_bytes: 286,
            encrypt_us: cpu,
            decrypt_us: cpu,
            update_bytes: commit,
            update_us: cpu,
            remove_bytes: commit,
            remove_us: cpu,
            add_bytes: 490,
            add_us: cpu,
            process_us: cpu,
            welcome_bytes: 360,
            tree_bytes: n * 200,
            join_us: cpu,
        }
    }

    #[test]
    fn a_measured_n_is_returned_as_measured_and_a_larger_one_is_fitted() {
        // Commit bytes grow by 500 per decade (log), CPU by 1 µs per member (linear).
        let mls = MlsCosts { points: vec![point(10, 1000, 10.0), point(100, 1500, 100.0), point(1000, 2000, 1000.0)] };
        let (p, prov) = mls.at(100).unwrap();
        assert_eq!((prov, p.update_bytes), (Provenance::Measured, 1500));
        let (p, prov) = mls.at(10_000).unwrap();
        assert_eq!(prov, Provenance::Extrapolated);
        assert_eq!(p.update_bytes, 2500, "log fit: one more decade, 500 more bytes");
        assert!((p.process_us - 10_000.0).abs() < 1e-6, "linear fit: {}", p.process_us);
        assert_eq!(p.tree_bytes, 2_000_000);
        assert_eq!((p.message_bytes, p.welcome_bytes), (286, 360), "constant stays constant");
    }
}
