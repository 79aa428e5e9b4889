//! Just enough PNG decoding to look at a browser's screenshots: 8-bit RGB or RGBA, not
//! interlaced (what Chromium writes), inflated with flate2.

use std::io::Read;

/// A decoded image: RGBA pixels, row by row.
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// width × height RGBA pixels.
    pub pixels: Vec<[u8; 4]>,
}

impl Image {
    /// How many pixels are within `tolerance` (per channel) of `rgb`.
    pub fn count(&self, rgb: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tolerance))
            .count()
    }

    /// How many distinct colours the image holds.
    pub fn colours(&self) -> usize {
        let set: std::collections::HashSet<[u8; 4]> = self.pixels.iter().copied().collect();
        set.len()
    }
}

/// Decodes `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    const SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];
    if bytes.len() < 8 || bytes[..8] != SIGNATURE {
        return Err("not a PNG".into());
    }
    let (mut pos, mut width, mut height, mut channels) = (8, 0usize, 0usize, 0usize);
    let mut data = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let body = bytes.get(pos + 8..pos + 8 + len).ok_or("truncated chunk")?;
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                let (depth, colour, interlace) = (body[8], body[9], body[12]);
                channels = match colour {
                    2 => 3,
                    6 => 4,
                    _ => return Err(format!("colour type {colour} is not RGB or RGBA")),
                };
                if depth != 8 || interlace != 0 {
                    return Err(format!(
                        "bit depth {depth}, interlace {interlace}: only 8 and none"
                    ));
                }
            }
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("inflating: {e}"))?;
    let stride = width * channels;
    if raw.len() < height * (stride + 1) {
        return Err("too little image data".into());
    }
    let mut pixels = Vec::with_capacity(width * height);
    let mut prev = vec![0u8; stride];
    for y in 0..height {
        let row = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("unknown filter {f}")),
            };
            cur[i] = src[i].wrapping_add(predicted);
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2], if channels == 4 { px[3] } else { 255 }]);
        }
        prev = cur;
    }
    Ok(Image {
        width,
        height,
        pixels,
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
