//! Colour maps: viridis (sequential), RdBu (diverging, centred on 0) and Blues.

/// A colour map from [0, 1] to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// Sequential, perceptually uniform (matplotlib's viridis).
    Viridis,
    /// Diverging: blue below the centre, white at it, red above (matplotlib's RdBu_r).
    RdBu,
    /// Sequential white to blue, for attention patterns.
    Blues,
}

const VIRIDIS: [u32; 11] = [
    0x440154, 0x482475, 0x414487, 0x355f8d, 0x2a788e, 0x21918c, 0x22a884, 0x44bf70, 0x7ad151,
    0xbddf26, 0xfde725,
];
const RDBU: [u32; 11] = [
    0x053061, 0x2166ac, 0x4393c3, 0x92c5de, 0xd1e5f0, 0xf7f7f7, 0xfddbc7, 0xf4a582, 0xd6604d,
    0xb2182b, 0x67001f,
];
const BLUES: [u32; 9] = [
    0xf7fbff, 0xdeebf7, 0xc6dbef, 0x9ecae1, 0x6baed6, 0x4292c6, 0x2171b5, 0x08519c, 0x08306b,
];

impl Colormap {
    /// Whether the map is meant to be centred on zero.
    pub fn diverging(self) -> bool {
        matches!(self, Colormap::RdBu)
    }

    /// The colour at t in [0, 1] (clamped), linearly interpolated between anchors.
    pub fn rgb(self, t: f64) -> (u8, u8, u8) {
        let anchors: &[u32] = match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::RdBu => &RDBU,
            Colormap::Blues => &BLUES,
        };
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let x = t * (anchors.len() - 1) as f64;
        let i = (x.floor() as usize).min(anchors.len() - 2);
        let f = x - i as f64;
        let ch = |c: u32, s: u32| ((c >> s) & 0xff) as f64;
        let mix =
            |s: u32| (ch(anchors[i], s) * (1.0 - f) + ch(anchors[i + 1], s) * f).round() as u8;
        (mix(16), mix(8), mix(0))
    }

    /// The colour at t as `#rrggbb`.
    pub fn hex(self, t: f64) -> String {
        let (r, g, b) = self.rgb(t);
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}
