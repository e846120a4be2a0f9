//! Decoding PNG, JPEG and TIFF files into interleaved RGB pixels.
//!
//! * The format is found from the file's first bytes (magic numbers), never from
//!   its extension.
//! * JPEG goes through mozjpeg's libjpeg-turbo-derived decoder with the library
//!   defaults that Pillow also uses (accurate integer "islow" IDCT, fancy chroma
//!   upsampling), so the pixels equal `PIL.Image.open(p).convert("RGB")` exactly.
//!   Grayscale, YCbCr and RGB JPEGs are accepted; CMYK/YCCK are rejected.
//!   Arithmetic-coded and 12-bit JPEGs are not supported by this build.
//! * PNG and TIFF go through the `image` crate. 8- and 16-bit samples are kept
//!   as they are ([`Pixels::U8`] / [`Pixels::U16`]). Low-bit PNGs and palettes
//!   are expanded to 8 bits; float TIFFs are rejected.
//! * Every image becomes three channels: gray is replicated into R, G and B;
//!   an alpha channel is **dropped, not composited** over any background (as
//!   Pillow's `convert("RGB")` does).
//! * EXIF orientation is ignored (as `Image.open` and torchvision ignore it).
//! * Images above [`MAX_PIXELS`] pixels, or above the `image_pixels` and
//!   `decoded_bytes` limits of [`crate::limits`], are refused before their pixels
//!   are allocated ([`Error::LimitExceeded`]).
//! * Decoding is strict: a JPEG warning (corrupt scan data, a bad Huffman code,
//!   premature end of data) is an error, unless
//!   [`crate::limits::Limits::lenient_decoding`] is set.
//! * Empty, truncated and corrupt files are [`Error::Decode`] errors naming the
//!   path, never panics. A JPEG whose data ends before libjpeg has finished
//!   (including one that only lacks its EOI marker) is "truncated", as in
//!   Pillow without `LOAD_TRUNCATED_IMAGES`.

use std::cell::Cell;
use std::io::{BufRead, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use image::{ImageDecoder, Limits};

use crate::error::{Error, Result};

/// Largest accepted image, in pixels (width × height): 2^28, about 268 megapixels.
pub const MAX_PIXELS: u64 = 1 << 28;

/// The container formats [`decode_image_bytes`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG, 1 to 16 bits per sample.
    Png,
    /// Baseline or progressive Huffman-coded JPEG, 8 bits per sample.
    Jpeg,
    /// TIFF or BigTIFF, 8 or 16 bits per sample.
    Tiff,
}

/// Interleaved RGB samples, row-major, `(height, width, 3)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 8-bit samples, 0..=255.
    U8(Vec<u8>),
    /// 16-bit samples, 0..=65535.
    U16(Vec<u16>),
}

impl Pixels {
    /// Number of samples (`height * width * 3` for a valid image).
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::U16(v) => v.len(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An RGB image: `pixels` holds `height * width * 3` samples, row-major, channels
/// interleaved (HWC).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The samples, `(height, width, 3)`.
    pub pixels: Pixels,
}

impl DecodedImage {
    /// Builds an image, checking that `pixels` holds `height * width * 3` samples.
    ///
    /// # Errors
    /// [`Error::Shape`] when the length does not match; [`Error::InvalidParam`]
    /// for a zero or too large size.
    pub fn new(width: u32, height: u32, pixels: Pixels) -> Result<Self> {
        let img = DecodedImage {
            width,
            height,
            pixels,
        };
        img.validate()?;
        Ok(img)
    }

    /// Checks the size and the sample count.
    ///
    /// # Errors
    /// As for [`DecodedImage::new`].
    pub fn validate(&self) -> Result<()> {
        check_size(self.width, self.height)?;
        let expected = self.width as usize * self.height as usize * 3;
        if self.pixels.len() != expected {
            return Err(Error::shape(
                "image pixels (height, width, 3)",
                &[self.height as usize, self.width as usize, 3],
                &[self.pixels.len()],
            ));
        }
        Ok(())
    }

    /// True for 16-bit samples.
    pub fn is_16bit(&self) -> bool {
        matches!(self.pixels, Pixels::U16(_))
    }

    /// The image as 8-bit RGB: u8 samples are copied, u16 samples are rounded to
    /// the nearest 8-bit value (`round(v * 255 / 65535)`).
    pub fn to_rgb8(&self) -> Vec<u8> {
        match &self.pixels {
            Pixels::U8(v) => v.clone(),
            Pixels::U16(v) => v
                .iter()
                .map(|&s| ((u32::from(s) + 128) / 257) as u8)
                .collect(),
        }
    }

    /// The samples as `f32` on their native scale (0..=255 or 0..=65535).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(v) => v.iter().map(|&s| f32::from(s)).collect(),
            Pixels::U16(v) => v.iter().map(|&s| f32::from(s)).collect(),
        }
    }

    /// The largest sample value of this bit depth (255 or 65535).
    pub fn max_value(&self) -> f32 {
        match self.pixels {
            Pixels::U8(_) => 255.0,
            Pixels::U16(_) => 65535.0,
        }
    }
}

/// Checks a width/height pair against zero, [`MAX_PIXELS`] and the
/// `image_pixels` limit.
pub(crate) fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::param(
            "image size",
            format!("width and height must be at least 1, got {width}x{height}"),
        ));
    }
    let n = u64::from(width) * u64::from(height);
    crate::limits::check("image_pixels", n)?;
    if n > MAX_PIXELS {
        return Err(Error::param(
            "image size",
            format!("{width}x{height} = {n} pixels exceeds the limit of {MAX_PIXELS}"),
        ));
    }
    Ok(())
}

/// A decoder failure: a message, or a crate error (a limit, a refused
/// allocation) kept as it is.
enum Fail {
    Msg(String),
    Lib(Error),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Msg(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Self {
        Fail::Msg(s.to_string())
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        match e {
            Error::LimitExceeded { .. } | Error::OutOfMemory { .. } => Fail::Lib(e),
            other => Fail::Msg(other.to_string()),
        }
    }
}

/// Finds the format from the first bytes, or `None` for anything else.
pub fn detect_format(bytes: &[u8]) -> Option<ImageFormat> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(PNG) {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"II\x2A\x00")
        || bytes.starts_with(b"MM\x00\x2A")
        || bytes.starts_with(b"II\x2B\x00")
        || bytes.starts_with(b"MM\x00\x2B")
    {
        Some(ImageFormat::Tiff)
    } else {
        None
    }
}

/// Reads and decodes an image file into RGB.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Decode`] (naming `path`)
/// for an empty, truncated, corrupt or unsupported file, or one larger than
/// [`MAX_PIXELS`]. Never panics on bad input.
pub fn decode_image_file(path: &Path) -> Result<DecodedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image_bytes(&bytes, path)
}

/// Decodes an in-memory image into RGB. `hint_path_for_errors` only names the
/// source in error messages.
///
/// # Errors
/// As for [`decode_image_file`], without the I/O part.
pub fn decode_image_bytes(bytes: &[u8], hint_path_for_errors: &Path) -> Result<DecodedImage> {
    let fail = |reason: String| Error::Decode {
        path: PathBuf::from(hint_path_for_errors),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("empty file".into()));
    }
    let format = detect_format(bytes).ok_or_else(|| {
        fail(
            "unrecognised format: expected a PNG, JPEG or TIFF signature in the first bytes".into(),
        )
    })?;
    // Both decoders are foreign code paths that may panic (mozjpeg unwinds on
    // every libjpeg error by design); turn any unwinding into a Decode error.
    let outcome = catch_unwind(AssertUnwindSafe(|| match format {
        ImageFormat::Jpeg => decode_jpeg(bytes),
        ImageFormat::Png | ImageFormat::Tiff => decode_with_image_crate(bytes, format),
    }));
    match outcome {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(Fail::Msg(reason))) => Err(fail(reason)),
        Ok(Err(Fail::Lib(e))) => Err(e),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "decoder panicked".into());
            Err(fail(msg))
        }
    }
}

/// A reader over a byte slice that records whether libjpeg asked for data past
/// the end. mozjpeg's source manager answers end-of-data with a fake EOI marker
/// and a silenced warning, so without this a truncated JPEG would decode "fine"
/// with a gray lower part; Pillow reports such files as truncated.
struct EofTrackingReader<'a> {
    data: &'a [u8],
    pos: usize,
    hit_eof: Rc<Cell<bool>>,
}

impl Read for EofTrackingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for EofTrackingReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(rest)
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.data.len());
    }
}

thread_local! {
    /// The first libjpeg warning of the decode running on this thread.
    static JPEG_WARNING: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// libjpeg's message hook: records the first warning (level −1: corrupt data,
/// bad Huffman code, premature end) and ignores trace messages.
extern "C-unwind" fn record_jpeg_warning(
    cinfo: &mut mozjpeg_sys::jpeg_common_struct,
    level: std::ffi::c_int,
) {
    if level >= 0 {
        return;
    }
    let mut text = String::from("corrupt JPEG data");
    // SAFETY: libjpeg calls this hook with a live `cinfo` whose `err` points to
    // the error manager we installed; `format_message` writes at most 80 bytes.
    unsafe {
        if let Some(err) = cinfo.err.as_ref() {
            if let Some(fmt) = err.format_message {
                let buffer = [0u8; 80];
                fmt(cinfo, &buffer);
                let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
                text = String::from_utf8_lossy(&buffer[..end]).into_owned();
            }
        }
    }
    JPEG_WARNING.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_none() {
            *w = Some(text);
        }
    });
}

/// libjpeg's fatal-error hook: unwinds with the message (caught by the caller).
extern "C-unwind" fn unwind_jpeg_error(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let mut text = String::from("libjpeg fatal error");
    // SAFETY: as in `record_jpeg_warning`.
    unsafe {
        if let Some(err) = cinfo.err.as_ref() {
            if let Some(fmt) = err.format_message {
                let buffer = [0u8; 80];
                fmt(cinfo, &buffer);
                let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
                text = format!(
                    "libjpeg fatal error: {}",
                    String::from_utf8_lossy(&buffer[..end])
                );
            }
        }
    }
    std::panic::resume_unwind(Box::new(text));
}

fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_jpeg_error);
    err.emit_message = Some(record_jpeg_warning);
    err
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<DecodedImage, Fail> {
    use mozjpeg::{ColorSpace, DctMethod};

    JPEG_WARNING.with(|w| w.borrow_mut().take());
    let strict = !crate::limits::lenient();
    let hit_eof = Rc::new(Cell::new(false));
    let reader = EofTrackingReader {
        data: bytes,
        pos: 0,
        hit_eof: Rc::clone(&hit_eof),
    };
    let mut dec = mozjpeg::Decompress::builder()
        .with_err(jpeg_error_mgr())
        .from_reader(reader)
        .map_err(|e| format!("JPEG header: {e}"))?;
    match dec.color_space() {
        ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => {}
        other => {
            return Err(format!(
                "unsupported JPEG colour space {other:?}: only grayscale, YCbCr and RGB JPEGs are supported"
            )
            .into())
        }
    }
    let (w, h) = dec.size();
    let (width, height) = (
        u32::try_from(w).map_err(|_| format!("JPEG width {w} too large"))?,
        u32::try_from(h).map_err(|_| format!("JPEG height {h} too large"))?,
    );
    check_size(width, height)?;
    crate::limits::check_product("decoded_bytes", &[u64::from(width), u64::from(height), 3])?;
    // Pillow's settings, which are also libjpeg's defaults.
    dec.dct_method(DctMethod::IntegerSlow);
    dec.do_fancy_upsampling(true);
    let mut started = dec.rgb().map_err(|e| format!("JPEG start: {e}"))?;
    if (started.width(), started.height()) != (w, h) {
        return Err("JPEG output size differs from the header size".into());
    }
    let data: Vec<u8> = started
        .read_scanlines()
        .map_err(|e| format!("JPEG scanlines: {e}"))?;
    if hit_eof.get() {
        return Err("truncated JPEG: the data ends before the image is complete".into());
    }
    if let Some(warning) = JPEG_WARNING.with(|w| w.borrow_mut().take()) {
        if strict {
            return Err(format!(
                "damaged JPEG ({warning}); pass --lenient (or set lenient_decoding) to accept it"
            )
            .into());
        }
    }
    if data.len() != w * h * 3 {
        return Err(format!(
            "JPEG decoder returned {} samples, expected {}",
            data.len(),
            w * h * 3
        )
        .into());
    }
    // Dropping `started` destroys the decompressor without reading to EOI.
    drop(started);
    Ok(DecodedImage {
        width,
        height,
        pixels: Pixels::U8(data),
    })
}

fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
) -> std::result::Result<DecodedImage, Fail> {
    let mut limits = Limits::default();
    // RGBA16 is the widest buffer the decoders allocate (8 bytes per pixel).
    limits.max_alloc = Some((MAX_PIXELS * 8).min(crate::limits::current().decoded_bytes));
    match format {
        ImageFormat::Png => decode_png(bytes, limits.max_alloc.unwrap_or(u64::MAX)),
        ImageFormat::Tiff => {
            if !crate::limits::lenient() {
                super::tiff_check::check_strips(bytes)
                    .map_err(|reason| format!("TIFF: {reason}; pass --lenient to accept it"))?;
            }
            let mut d = image::codecs::tiff::TiffDecoder::new(Cursor::new(bytes))
                .map_err(|e| format!("TIFF: {e}"))?;
            d.set_limits(limits).map_err(|e| format!("TIFF: {e}"))?;
            read_rgb(d)
        }
        ImageFormat::Jpeg => unreachable!("JPEG is decoded by mozjpeg"),
    }
}

/// PNG through the `png` crate, whose checksum switches `image` does not
/// expose: strict decoding verifies every chunk's CRC (ancillary chunks
/// included) and the zlib Adler-32 of the image data; lenient decoding
/// verifies neither. Palettes and low bit depths are expanded to 8 bits.
fn decode_png(bytes: &[u8], max_alloc: u64) -> std::result::Result<DecodedImage, Fail> {
    // The size from IHDR, checked before the decoder sizes any buffer.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        check_size(w, h)?;
    }
    let strict = !crate::limits::lenient();
    let mut options = png::DecodeOptions::default();
    options.set_ignore_checksums(!strict);
    options.set_skip_ancillary_crc_failures(!strict);
    let mut decoder = png::Decoder::new_with_options(Cursor::new(bytes), options);
    decoder.set_limits(png::Limits {
        bytes: usize::try_from(max_alloc).unwrap_or(usize::MAX),
    });
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| format!("PNG: {e}"))?;
    let (width, height) = (reader.info().width, reader.info().height);
    check_size(width, height)?;
    let (channels, wide) = match reader.output_color_type() {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => (1, false),
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => (2, false),
        (png::ColorType::Rgb, png::BitDepth::Eight) => (3, false),
        (png::ColorType::Rgba, png::BitDepth::Eight) => (4, false),
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => (1, true),
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Sixteen) => (2, true),
        (png::ColorType::Rgb, png::BitDepth::Sixteen) => (3, true),
        (png::ColorType::Rgba, png::BitDepth::Sixteen) => (4, true),
        other => return Err(format!("PNG: unsupported output layout {other:?}").into()),
    };
    let n = width as usize * height as usize;
    let total = (n as u64) * channels as u64 * if wide { 2 } else { 1 };
    crate::limits::check("decoded_bytes", total)?;
    if reader.output_buffer_size() != usize::try_from(total).ok() {
        return Err("PNG: decoder buffer size differs from its header".into());
    }
    let mut fill = |buf: &mut [u8]| -> std::result::Result<(), String> {
        reader.next_frame(buf).map_err(|e| format!("PNG: {e}"))?;
        if wide {
            // PNG samples are big-endian; the u16 buffer is native.
            for pair in buf.chunks_exact_mut(2) {
                let v = u16::from_be_bytes([pair[0], pair[1]]);
                pair.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Ok(())
    };
    decoded_rgb(width, height, channels, wide, &mut fill)
}

/// Decodes into one buffer of the final RGB size (plus the alpha channel for
/// RGBA), reserved with `try_reserve` after the size checks: the peak is the
/// output itself, and a refused allocation is an error rather than an abort.
fn read_rgb<D: ImageDecoder>(decoder: D) -> std::result::Result<DecodedImage, Fail> {
    use image::ColorType as C;
    let (width, height) = decoder.dimensions();
    check_size(width, height)?;
    crate::limits::check("decoded_bytes", decoder.total_bytes())?;
    let (channels, wide) = match decoder.color_type() {
        C::L8 => (1, false),
        C::La8 => (2, false),
        C::Rgb8 => (3, false),
        C::Rgba8 => (4, false),
        C::L16 => (1, true),
        C::La16 => (2, true),
        C::Rgb16 => (3, true),
        C::Rgba16 => (4, true),
        other => {
            return Err(format!(
                "unsupported sample type {other:?}: only 8- and 16-bit integer images are supported"
            )
            .into())
        }
    };
    let total = decoder.total_bytes();
    let mut decoder = Some(decoder);
    let mut fill = |buf: &mut [u8]| -> std::result::Result<(), String> {
        if buf.len() as u64 != total {
            return Err("decoder buffer size differs from its header".into());
        }
        let d = decoder.take().ok_or("decoder used twice")?;
        d.read_image(buf).map_err(|e| e.to_string())
    };
    decoded_rgb(width, height, channels, wide, &mut fill)
}

/// The RGB image of `width`×`height` pixels of `channels` 8- or 16-bit (`wide`)
/// samples that `fill` decodes ([`expand_to_rgb`]).
fn decoded_rgb(
    width: u32,
    height: u32,
    channels: usize,
    wide: bool,
    fill: &mut dyn FnMut(&mut [u8]) -> std::result::Result<(), String>,
) -> std::result::Result<DecodedImage, Fail> {
    let n = width as usize * height as usize;
    let pixels = if wide {
        Pixels::U16(expand_to_rgb(n, channels, 0u16, fill)?)
    } else {
        Pixels::U8(expand_to_rgb(n, channels, 0u8, fill)?)
    };
    Ok(DecodedImage {
        width,
        height,
        pixels,
    })
}

/// `n` pixels of `channels` samples, which `fill` decodes as native-endian
/// bytes, returned as RGB: gray is decoded into the tail of the RGB buffer and
/// spread forwards in place, RGBA is packed to RGB in place.
fn expand_to_rgb<T: Sample>(
    n: usize,
    channels: usize,
    zero: T,
    fill: &mut dyn FnMut(&mut [u8]) -> std::result::Result<(), String>,
) -> std::result::Result<Vec<T>, Fail> {
    let samples = n * channels.max(3);
    let mut buf = crate::limits::try_vec(samples, zero, "decoded image samples")?;
    let start = samples - n * channels;
    fill(T::bytes_of(&mut buf[start..]))?;
    match channels {
        // Pixel i is read at start + i·channels before the writes to 3i..3i+3
        // can reach it: 3i + 2 < start + (i + 1)·channels for every i < n.
        1 | 2 => {
            for i in 0..n {
                let v = buf[start + i * channels];
                buf[3 * i..3 * i + 3].fill(v);
            }
        }
        4 => {
            for i in 0..n {
                buf.copy_within(4 * i..4 * i + 3, 3 * i);
            }
            buf.truncate(n * 3);
            buf.shrink_to_fit();
        }
        _ => {}
    }
    Ok(buf)
}

/// A sample type whose buffer the decoders fill as native-endian bytes.
trait Sample: Copy {
    fn bytes_of(v: &mut [Self]) -> &mut [u8];
}

impl Sample for u8 {
    fn bytes_of(v: &mut [u8]) -> &mut [u8] {
        v
    }
}

impl Sample for u16 {
    fn bytes_of(v: &mut [u16]) -> &mut [u8] {
        // SAFETY: u16 has no padding and every byte pattern is a valid u16; the
        // byte view covers exactly the slice's memory and borrows it mutably.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 2) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_pick_the_format() {
        assert_eq!(
            detect_format(b"\x89PNG\r\n\x1a\nrest"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            detect_format(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(detect_format(b"II*\0...."), Some(ImageFormat::Tiff));
        assert_eq!(detect_format(b"MM\0*...."), Some(ImageFormat::Tiff));
        assert_eq!(detect_format(b"GIF89a"), None);
        assert_eq!(detect_format(b""), None);
    }

    #[test]
    fn bad_bytes_are_decode_errors() {
        let p = Path::new("mem.bin");
        for bytes in [
            &b""[..],
            &b"hello, world"[..],
            &[0xFF, 0xD8, 0xFF][..],
            &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F'][..],
            &b"\x89PNG\r\n\x1a\n\0\0"[..],
            &b"II*\0\x08\0\0\0"[..],
        ] {
            match decode_image_bytes(bytes, p) {
                Err(Error::Decode { path, .. }) => assert_eq!(path, p),
                other => panic!("expected a Decode error for {bytes:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn size_guard() {
        assert!(check_size(1, 1).is_ok());
        assert!(check_size(0, 5).is_err());
        // The default `image_pixels` limit (2^26) is below MAX_PIXELS (2^28).
        assert!(check_size(1 << 13, 1 << 13).is_ok());
        assert!(matches!(
            check_size(1 << 15, 1 << 13),
            Err(Error::LimitExceeded {
                limit: "image_pixels",
                ..
            })
        ));
        assert!(check_size(1 << 15, (1 << 13) + 1).is_err());
    }

    #[test]
    fn sixteen_to_eight_bits_rounds() {
        let img = DecodedImage::new(1, 1, Pixels::U16(vec![0, 128, 65535])).unwrap();
        assert_eq!(img.to_rgb8(), vec![0, 0, 255]);
        let img = DecodedImage::new(1, 1, Pixels::U16(vec![129, 257 * 7, 65406])).unwrap();
        // 129/257 = 0.502 -> 1; 65406/257 = 254.498 -> 254
        assert_eq!(img.to_rgb8(), vec![1, 7, 254]);
    }
}
