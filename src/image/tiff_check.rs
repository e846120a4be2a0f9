//! Strict TIFF structure check: every strip (or tile) of the first image must
//! lie inside the file. The `tiff` crate reads only the bytes it needs, so a
//! directory that claims more than the file holds would otherwise decode as if
//! nothing were wrong.

/// Checks the first directory's StripOffsets/StripByteCounts (or the tile
/// equivalents) against the file length; classic TIFF and BigTIFF, either
/// byte order. A directory without them is left to the decoder.
///
/// # Errors
/// A reason naming the first inconsistency.
pub(crate) fn check_strips(b: &[u8]) -> Result<(), String> {
    let big_endian = match b.get(..2) {
        Some(b"II") => false,
        Some(b"MM") => true,
        _ => return Err("no byte-order mark".into()),
    };
    let read = |at: u64, size: u64| -> Result<u64, String> {
        let start = usize::try_from(at).map_err(|_| "offset too large")?;
        let s = b
            .get(start..start.saturating_add(size as usize))
            .filter(|s| s.len() == size as usize)
            .ok_or_else(|| {
                format!("a directory field at byte {at} lies past the end of the file")
            })?;
        let mut v = 0u64;
        for i in 0..s.len() {
            let byte = if big_endian { s[i] } else { s[s.len() - 1 - i] };
            v = v << 8 | u64::from(byte);
        }
        Ok(v)
    };
    let (big_tiff, ifd) = match read(2, 2)? {
        42 => (false, read(4, 4)?),
        43 => (true, read(8, 8)?),
        v => return Err(format!("version {v} is neither TIFF (42) nor BigTIFF (43)")),
    };
    let (entries, entry_size, first, inline) = if big_tiff {
        (read(ifd, 8)?, 20u64, ifd + 8, 8u64)
    } else {
        (read(ifd, 2)?, 12u64, ifd + 2, 4u64)
    };
    entries
        .checked_mul(entry_size)
        .and_then(|n| n.checked_add(first))
        .filter(|&e| e <= b.len() as u64)
        .ok_or("the first directory runs past the end of the file")?;
    let values = |at: u64| -> Result<Vec<u64>, String> {
        let size = match read(at + 2, 2)? {
            3 => 2,
            4 => 4,
            16 => 8,
            t => return Err(format!("strip offsets or counts of field type {t}")),
        };
        let n = read(at + 4, if big_tiff { 8 } else { 4 })?;
        let field = at + if big_tiff { 12 } else { 8 };
        let total = n
            .checked_mul(size)
            .filter(|&t| t <= b.len() as u64)
            .ok_or("a strip list longer than the file")?;
        let data = if total <= inline {
            field
        } else {
            read(field, inline)?
        };
        (0..n).map(|i| read(data + i * size, size)).collect()
    };
    let (mut offsets, mut counts) = (None, None);
    for e in 0..entries {
        let at = first + e * entry_size;
        match read(at, 2)? {
            273 | 324 => offsets = Some(values(at)?),
            279 | 325 => counts = Some(values(at)?),
            _ => {}
        }
    }
    let (Some(offsets), Some(counts)) = (offsets, counts) else {
        return Ok(());
    };
    if offsets.len() != counts.len() {
        return Err(format!(
            "{} strip offsets but {} strip byte counts",
            offsets.len(),
            counts.len()
        ));
    }
    for (i, (&off, &count)) in offsets.iter().zip(&counts).enumerate() {
        if off.checked_add(count).is_none_or(|e| e > b.len() as u64) {
            return Err(format!(
                "strip {i} ({count} bytes at byte {off}) runs past the end of the file ({} bytes)",
                b.len()
            ));
        }
    }
    Ok(())
}
