//! A strict parser of the `.npy` header, used to size-check an array before it
//! is read (the reader of `ndarray-npy` allocates what the header declares).

/// Parses a `.npy` prefix (magic, version, header dict) and returns the offset of
/// the data and the number of elements of a float32 array.
///
/// # Errors
/// A reason when the prefix is not a float32 `.npy` header.
pub(crate) fn parse(b: &[u8]) -> Result<(u64, u64), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let (len, start) = match b[6] {
        1 => (u64::from(u16::from_le_bytes([b[8], b[9]])), 10u64),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u64::from(u32::from_le_bytes([b[8], b[9], b[10], b[11]])),
                12u64,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start + len;
    if end > b.len() as u64 {
        return Err(format!(
            "header of {len} bytes is truncated or larger than 64 KiB"
        ));
    }
    let dict = std::str::from_utf8(&b[start as usize..end as usize])
        .map_err(|_| "header is not text".to_string())?;
    let descr = value_after(dict, "'descr'").ok_or("header has no 'descr'")?;
    let descr = descr.trim_start();
    if !(descr.starts_with("'<f4'") || descr.starts_with("'>f4'") || descr.starts_with("'=f4'")) {
        return Err(format!(
            "dtype {} is not float32",
            descr.split(',').next().unwrap_or("")
        ));
    }
    let shape = value_after(dict, "'shape'").ok_or("header has no 'shape'")?;
    let shape = shape.trim_start();
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or("'shape' is not a tuple")?;
    let mut n: u64 = 1;
    for dim in inner.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: u64 = dim
            .trim_end_matches('L')
            .parse()
            .map_err(|_| format!("shape entry `{dim}` is not a non-negative integer"))?;
        n = n.saturating_mul(d);
    }
    Ok((end, n))
}

fn value_after<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(key)? + key.len();
    let rest = dict[at..].trim_start();
    rest.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn npy(dict: &str) -> Vec<u8> {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v
    }

    #[test]
    fn shapes_and_dtypes() {
        let h = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }");
        assert_eq!(parse(&h).unwrap(), (h.len() as u64, 12));
        let h = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }");
        assert_eq!(parse(&h).unwrap().1, 1 << 40);
        let h = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
        assert_eq!(parse(&h).unwrap().1, 1);
        assert!(parse(&npy("{'descr': '<f8', 'shape': (3,), }")).is_err());
        assert!(parse(&npy("{'descr': '<f4', 'shape': (-3,), }")).is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
