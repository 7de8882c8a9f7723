//! What a JPEG-LS stream decodes to, and the error it gives when it cannot.

use std::fmt;

/// Interleave mode of the (first) scan, ILV in the SOS segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interleave {
    /// ILV = 0: one scan per component.
    None,
    /// ILV = 1: line interleaved.
    Line,
    /// ILV = 2: sample interleaved.
    Sample,
}

/// Colour transform declared by an APP8 "mrfx" segment (HP / CharLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourTransform {
    None,
    Hp1,
    Hp2,
    Hp3,
}

/// A decoded JPEG-LS image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    /// P from SOF55, 2..=16.
    pub bits_per_sample: u8,
    /// NEAR of the (first) scan; 0 = lossless.
    pub near: u16,
    pub interleave: Interleave,
    pub colour_transform: ColourTransform,
    /// Row-major, components interleaved per pixel whatever the stream's
    /// interleave mode, colour transform undone.
    pub samples: Vec<u16>,
}

/// What is wrong with a stream that cannot be decoded.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
