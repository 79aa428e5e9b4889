//! Content digests (`sha256:<64 hex>`, the only algorithm registries use in practice) and
//! readers and writers that hash what passes through them.

use super::error::ImageError;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// A sha256 content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`; `context` says where it was found (for the
    /// error).
    pub fn parse(s: &str, context: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::InvalidDigest {
            digest: s.to_string(),
            context: context.to_string(),
            reason: reason.to_string(),
        };
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected ALGORITHM:HEX"))?;
        if algo != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("a sha256 digest is 64 lowercase hex digits"));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The hex part (a file name in the store).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `bytes` hash to this digest; `context` names the content for the error.
    pub fn verify(&self, bytes: &[u8], context: &str) -> Result<(), ImageError> {
        let actual = Self::of(bytes);
        if actual != *self {
            return Err(ImageError::DigestMismatch {
                context: context.to_string(),
                expected: self.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s, "JSON").map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest (so that trailing bytes are hashed too) and returns the digest and the
    /// number of bytes read.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The digest of what was written, and the writer.
    pub(crate) fn finish(self) -> (Digest, W) {
        (
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&d.to_string(), "t").unwrap(), d);
        assert!(d.verify(b"hello", "t").is_ok());
        let err = d.verify(b"hullo", "layer 0 of x").unwrap_err().to_string();
        assert!(
            err.contains("layer 0 of x") && err.contains("expected sha256:2cf2"),
            "{err}"
        );
        for bad in [
            "sha512:00",
            "sha256:abc",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000000",
        ] {
            assert!(Digest::parse(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader_and_writer_agree() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!((d.clone(), n), (Digest::of(&data), 100_000));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        assert_eq!(w.count(), 100_000);
        let (d2, out) = w.finish();
        assert_eq!(d2, d);
        assert_eq!(out, data);
    }
}
