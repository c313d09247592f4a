//! Helpers shared by the fuzz targets (`fuzz_targets/`): how one input becomes a control byte
//! and a body cut into network-sized reads.

/// Splits `data` into a control byte and a body.
pub fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => (0, &[]),
    }
}

/// Cuts `body` into reads of varying size, steered by `seed`, as a network would.
pub fn reads(body: &[u8], seed: u8) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    let mut step = seed as usize % 37 + 1;
    std::iter::from_fn(move || {
        if at >= body.len() {
            return None;
        }
        let n = step.min(body.len() - at);
        let piece = &body[at..at + n];
        at += n;
        step = (step * 7 + 3) % 97 + 1;
        Some(piece)
    })
}
