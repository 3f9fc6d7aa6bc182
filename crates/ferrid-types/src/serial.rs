//! X.509 certificate serial numbers in the one form Ferrid writes and compares.
//!
//! The canonical form is the lowercase, even-length hex of the serial's magnitude
//! bytes: what `openssl x509 -serial` prints, lowercased (`0f34433b…` for a serial
//! whose first byte is `0x0f`), without the `00` byte DER adds before a magnitude whose
//! high bit is set. Every place that takes a serial from a person or a peer
//! ([`Serial::parse`]) accepts upper or lower case, colons between bytes, a `0x`
//! prefix and leading zeros, so `0F:34:43:3B`, `f34433b` and `0x000f34433b` are the
//! same serial.
use std::fmt;
use std::str::FromStr;

/// The most octets a serial may have (RFC 5280 §4.1.2.2: at most 20).
pub const MAX_SERIAL_OCTETS: usize = 20;

/// A certificate serial number, held in canonical form (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Box<str>);

/// Why a serial was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// Nothing but separators.
    #[error("a serial number needs at least one hex digit")]
    Empty,
    /// A character that is not a hex digit or a colon.
    #[error("{0:?} is not a hex digit (a serial number is hex, optionally with colons)")]
    NotHex(char),
    /// More than [`MAX_SERIAL_OCTETS`] octets once leading zeros are removed.
    #[error("a serial number has at most {MAX_SERIAL_OCTETS} octets (RFC 5280), this one has {0}")]
    TooLong(usize),
}

impl Serial {
    /// The serial of the big-endian magnitude bytes `raw` (a DER INTEGER's content, as
    /// `x509-parser`'s `raw_serial` gives it): leading `00` bytes are dropped, one is
    /// kept for zero.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SerialError> {
        let first = raw.iter().position(|b| *b != 0);
        let magnitude = match first {
            Some(i) => &raw[i..],
            None if raw.is_empty() => return Err(SerialError::Empty),
            None => &[0u8][..],
        };
        if magnitude.len() > MAX_SERIAL_OCTETS {
            return Err(SerialError::TooLong(magnitude.len()));
        }
        let mut s = String::with_capacity(magnitude.len() * 2);
        for b in magnitude {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0xf));
        }
        Ok(Self(s.into_boxed_str()))
    }

    /// Parses a serial written by a person or a peer: hex digits in either case,
    /// optionally separated by colons, optionally prefixed `0x`, with or without
    /// leading zeros. Surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, SerialError> {
        let t = s.trim();
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        let mut digits = String::with_capacity(t.len());
        for c in t.chars() {
            match c {
                ':' => {}
                c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase()),
                c => return Err(SerialError::NotHex(c)),
            }
        }
        if digits.is_empty() {
            return Err(SerialError::Empty);
        }
        let significant = digits.trim_start_matches('0');
        let octets = significant.len().div_ceil(2).max(1);
        if octets > MAX_SERIAL_OCTETS {
            return Err(SerialError::TooLong(octets));
        }
        let canonical = match significant.len() {
            0 => "00".to_owned(),
            n if n % 2 == 1 => format!("0{significant}"),
            _ => significant.to_owned(),
        };
        Ok(Self(canonical.into_boxed_str()))
    }

    /// The canonical form: lowercase, even-length hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

impl FromStr for Serial {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, SerialError> {
        Self::parse(s)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.0)
    }
}

impl AsRef<str> for Serial {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_even_length_lowercase() {
        // What openssl prints for a serial whose first byte is 0x0f.
        let s = Serial::parse("0F34433B").unwrap();
        assert_eq!(s.as_str(), "0f34433b");
        for same in ["f34433b", "0f:34:43:3b", "0x000F34433B", " 0f34433b\n", "00:0F:34:43:3B"] {
            assert_eq!(Serial::parse(same).unwrap(), s, "{same:?}");
        }
        assert_eq!(Serial::parse("0").unwrap().as_str(), "00");
        assert_eq!(Serial::parse("000").unwrap().as_str(), "00");
        assert_eq!(Serial::parse("abc").unwrap().as_str(), "0abc");
        assert_eq!(Serial::parse("5AB").unwrap(), Serial::parse("05ab").unwrap());
    }

    #[test]
    fn from_der_bytes_drops_sign_padding() {
        assert_eq!(Serial::from_bytes(&[0x0f, 0x34]).unwrap().as_str(), "0f34");
        assert_eq!(Serial::from_bytes(&[0x00, 0x8f, 0x01]).unwrap().as_str(), "8f01");
        assert_eq!(Serial::from_bytes(&[0x00]).unwrap().as_str(), "00");
        assert_eq!(Serial::from_bytes(&[0x00, 0x00, 0x01]).unwrap().as_str(), "01");
        assert_eq!(Serial::from_bytes(&[]).unwrap_err(), SerialError::Empty);
        // The byte and text forms agree.
        let raw = [0x00, 0x0a, 0xbc, 0xde];
        assert_eq!(Serial::from_bytes(&raw).unwrap(), Serial::parse("0abcde").unwrap());
    }

    #[test]
    fn bad_serials_are_refused_precisely() {
        assert_eq!(Serial::parse("").unwrap_err(), SerialError::Empty);
        assert_eq!(Serial::parse("::").unwrap_err(), SerialError::Empty);
        assert_eq!(Serial::parse("0x").unwrap_err(), SerialError::Empty);
        assert_eq!(Serial::parse("12 34").unwrap_err(), SerialError::NotHex(' '));
        assert_eq!(Serial::parse("xyz").unwrap_err(), SerialError::NotHex('x'));
        assert_eq!(Serial::parse("-1").unwrap_err(), SerialError::NotHex('-'));
        assert_eq!(Serial::parse(&"a".repeat(41)).unwrap_err(), SerialError::TooLong(21));
        assert!(Serial::parse(&"a".repeat(40)).is_ok());
        // Leading zeros do not count against the limit.
        assert!(Serial::parse(&format!("{}{}", "0".repeat(30), "a".repeat(40))).is_ok());
        assert_eq!(Serial::from_bytes(&[1; 21]).unwrap_err(), SerialError::TooLong(21));
    }
}
