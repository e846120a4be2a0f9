//! A strict parser of the `.npy` header, so that an array is size-checked
//! before its data is read, and its buffer reserved without aborting.

/// What a float32 `.npy` header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Offset of the data from the start of the file.
    pub data_offset: u64,
    /// The dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Elements, the product of `shape` (saturating).
    pub elements: u64,
    /// Column-major data (`fortran_order: True`).
    pub fortran_order: bool,
    /// Big-endian samples (`>f4`).
    pub big_endian: bool,
}

/// Parses a `.npy` prefix (magic, version, header dict) of a float32 array.
///
/// # Errors
/// A reason when the prefix is not a float32 `.npy` header.
pub(crate) fn parse(b: &[u8]) -> Result<Header, String> {
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
    let big_endian = descr.starts_with("'>f4'");
    let fortran = value_after(dict, "'fortran_order'")
        .ok_or("header has no 'fortran_order'")?
        .trim_start();
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err("'fortran_order' is neither True nor False".into());
    };
    let shape = value_after(dict, "'shape'").ok_or("header has no 'shape'")?;
    let shape = shape.trim_start();
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or("'shape' is not a tuple")?;
    let mut dims = Vec::new();
    let mut n: u64 = 1;
    for dim in inner.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: u64 = dim
            .trim_end_matches('L')
            .parse()
            .map_err(|_| format!("shape entry `{dim}` is not a non-negative integer"))?;
        n = n.saturating_mul(d);
        dims.push(d);
    }
    Ok(Header {
        data_offset: end,
        shape: dims,
        elements: n,
        fortran_order,
        big_endian,
    })
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
        let p = parse(&h).unwrap();
        assert_eq!((p.data_offset, p.elements), (h.len() as u64, 12));
        assert_eq!(p.shape, [3, 4]);
        assert!(!p.fortran_order && !p.big_endian);
        let h = npy("{'descr': '>f4', 'fortran_order': True, 'shape': (1099511627776,), }");
        let p = parse(&h).unwrap();
        assert_eq!(p.elements, 1 << 40);
        assert!(p.fortran_order && p.big_endian);
        let h = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
        assert_eq!(parse(&h).unwrap().elements, 1);
        assert!(parse(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
        ))
        .is_err());
        assert!(parse(&npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }"
        ))
        .is_err());
        assert!(parse(&npy(
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }"
        ))
        .is_err());
        assert!(parse(&npy("{'descr': '<f4', 'shape': (3,), }")).is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
