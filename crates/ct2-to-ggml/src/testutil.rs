//! Test helpers: a writer of synthetic CTranslate2 `model.bin` files, so the
//! reader and the converter are tested without the real 75 MB model.

use half::f16;

/// dtype ids as CTranslate2 numbers them.
pub const F32: u8 = 0;
pub const I8: u8 = 1;
pub const I16: u8 = 2;
pub const F16: u8 = 4;

/// Builds a `model.bin` image variable by variable.
pub struct Ct2Builder {
    pub version: u32,
    vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
    aliases: Vec<(String, String)>,
}

impl Ct2Builder {
    pub fn new() -> Self {
        Ct2Builder {
            version: 6,
            vars: Vec::new(),
            aliases: Vec::new(),
        }
    }

    pub fn raw(&mut self, name: &str, shape: &[u32], dtype: u8, data: Vec<u8>) -> &mut Self {
        self.vars
            .push((name.to_owned(), shape.to_vec(), dtype, data));
        self
    }

    pub fn f16(&mut self, name: &str, shape: &[u32], values: &[f32]) -> &mut Self {
        let data = values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        self.raw(name, shape, F16, data)
    }

    pub fn f32(&mut self, name: &str, shape: &[u32], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw(name, shape, F32, data)
    }

    pub fn i8(&mut self, name: &str, shape: &[u32], values: &[i8]) -> &mut Self {
        let data = values.iter().map(|&v| v as u8).collect();
        self.raw(name, shape, I8, data)
    }

    pub fn i16_scalar(&mut self, name: &str, value: i16) -> &mut Self {
        self.raw(name, &[], I16, value.to_le_bytes().to_vec())
    }

    pub fn alias(&mut self, alias: &str, target: &str) -> &mut Self {
        self.aliases.push((alias.to_owned(), target.to_owned()));
        self
    }

    /// The file image, in CTranslate2's layout.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.version.to_le_bytes());
        put_string(&mut out, "WhisperSpec");
        out.extend(3u32.to_le_bytes());
        out.extend((self.vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in &self.vars {
            put_string(&mut out, name);
            out.push(shape.len() as u8);
            shape.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.push(*dtype);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out.extend((self.aliases.len() as u32).to_le_bytes());
        for (alias, target) in &self.aliases {
            put_string(&mut out, alias);
            put_string(&mut out, target);
        }
        out
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u16 + 1).to_le_bytes());
    out.extend(s.as_bytes());
    out.push(0);
}

/// `n` distinct, f16-exact values starting at `start` (steps of 1/8).
pub fn ramp(start: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| start + i as f32 / 8.0).collect()
}

/// A fresh empty directory under the system temp dir, unique per test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ct2-to-ggml-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
