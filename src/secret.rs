//! Comparing secrets (tokens) in constant time: shared by the admin API, the
//! registry and the debug header, so the data plane needs nothing above it.

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}
