//! Random identifiers.

/// A fresh random identifier in UUID v4 form (what Leap0 clients expect to see as ids).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // A failing OS random source leaves zeros only if getrandom fails, which it reports; fall
    // back to the clock so two ids still differ (ids are names, not secrets).
    if getrandom::fill(&mut b).is_err() {
        let t = crate::now_ms().to_le_bytes();
        b[..8].copy_from_slice(&t);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_shape_and_unique() {
        let a = super::new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, super::new_id());
    }
}
