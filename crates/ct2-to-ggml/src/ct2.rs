//! Reader for CTranslate2's `model.bin`.
//!
//! Layout (little-endian, binary versions 4 to 6): u32 version; string spec
//! name; u32 spec revision; u32 variable count; per variable: string name, u8
//! rank, u32 dims[rank], u8 dtype id, u32 byte count, raw data; then u32 alias
//! count and (alias, target) string pairs. A string is a u16 length that
//! counts a trailing NUL, then the bytes.
//!
//! Opening the file only builds an index (names, shapes, offsets); tensor data
//! is read on demand, so converting a large model never holds the whole
//! `model.bin` in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Oldest binary version read: the first one that stores a dtype id per variable.
pub const MIN_VERSION: u32 = 4;
/// Newest binary version read (CTranslate2 4.x writes 6).
pub const MAX_VERSION: u32 = 6;

/// Suffix CTranslate2 gives the scale of a quantised weight.
const SCALE_SUFFIX: &str = "_scale";

/// Element type of a stored variable, numbered as CTranslate2's `DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }

    fn is_integer(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32)
    }
}

/// One entry of the variable index.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: String,
    /// Row-major dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    pub dtype: DType,
    offset: u64,
    len: usize,
}

impl Variable {
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
}

/// An opened `model.bin`: its index, plus the reader that data is fetched from.
pub struct Ct2Model<R> {
    reader: R,
    path: PathBuf,
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    variables: Vec<Variable>,
    index: HashMap<String, usize>,
    aliases: Vec<(String, String)>,
}

impl Ct2Model<BufReader<File>> {
    /// Opens and indexes a `model.bin` file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_reader(BufReader::new(file), path)
    }
}

impl<R> Ct2Model<R> {
    /// All stored variables, in file order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The (alias, target) pairs: names that share another variable's data.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// Looks a variable up by name, following an alias to its target.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        let target = self
            .aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .map_or(name, |(_, target)| target.as_str());
        self.index.get(target).map(|&i| &self.variables[i])
    }

    /// True when `name` is the scale of a quantised weight stored beside it.
    pub fn is_scale_of_weight(&self, name: &str) -> bool {
        name.strip_suffix(SCALE_SUFFIX)
            .is_some_and(|base| self.variable(base).is_some())
    }
}

impl<R: Read + Seek> Ct2Model<R> {
    /// Indexes a `model.bin` read from `reader`; `path` only labels errors.
    pub fn from_reader(mut reader: R, path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| read_error(path, e);
        let version = read_u32(&mut reader).map_err(io)?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let spec = read_string(&mut reader).map_err(io)?;
        let revision = read_u32(&mut reader).map_err(io)?;
        let count = read_u32(&mut reader).map_err(io)?;

        let mut variables = Vec::new();
        for _ in 0..count {
            let name = read_string(&mut reader).map_err(io)?;
            let rank = read_u8(&mut reader).map_err(io)?;
            let mut shape = Vec::with_capacity(rank.into());
            for _ in 0..rank {
                shape.push(read_u32(&mut reader).map_err(io)? as usize);
            }
            let dtype_id = read_u8(&mut reader).map_err(io)?;
            let dtype = DType::from_id(dtype_id).ok_or_else(|| {
                Error::Format(format!("`{name}` has unknown dtype id {dtype_id}"))
            })?;
            let len = read_u32(&mut reader).map_err(io)? as usize;
            let elements: usize = shape.iter().product();
            if elements * dtype.size() != len {
                return Err(Error::Format(format!(
                    "`{name}` stores {len} bytes, but its shape {shape:?} of {dtype:?} needs {}",
                    elements * dtype.size()
                )));
            }
            let offset = reader.stream_position().map_err(io)?;
            // Skipping past the end is not an error by itself; the next read
            // (or the alias count) then reports the truncation.
            reader.seek_relative(len as i64).map_err(io)?;
            variables.push(Variable {
                name,
                shape,
                dtype,
                offset,
                len,
            });
        }

        let alias_count = read_u32(&mut reader).map_err(io)?;
        let mut aliases = Vec::with_capacity(alias_count as usize);
        for _ in 0..alias_count {
            let alias = read_string(&mut reader).map_err(io)?;
            let target = read_string(&mut reader).map_err(io)?;
            aliases.push((alias, target));
        }

        let index = variables
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        Ok(Ct2Model {
            reader,
            path: path.to_owned(),
            version,
            spec,
            revision,
            variables,
            index,
            aliases,
        })
    }

    /// Reads a tensor as f32, dequantising an integer tensor with its `_scale`.
    pub fn read_f32(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let var = self
            .variable(name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor(name.to_owned()))?;
        let mut values = self.decode(&var)?;
        if var.dtype.is_integer() && !var.is_scalar() {
            let scale_name = format!("{}{SCALE_SUFFIX}", var.name);
            let (_, scale) = self.read_f32(&scale_name).map_err(|_| {
                Error::bad_tensor(name, format!("integer tensor without `{scale_name}`"))
            })?;
            dequantize(&mut values, &scale, &var).map_err(|r| Error::bad_tensor(name, r))?;
        }
        Ok((var.shape, values))
    }

    /// Reads an integer scalar such as `encoder/num_heads`; `None` when absent.
    pub fn read_int_scalar(&mut self, name: &str) -> Result<Option<i64>> {
        let Some(var) = self.variable(name).cloned() else {
            return Ok(None);
        };
        if !var.is_scalar() || !var.dtype.is_integer() {
            return Err(Error::bad_tensor(name, "expected an integer scalar"));
        }
        Ok(self.decode(&var)?.first().map(|&v| v as i64))
    }

    fn decode(&mut self, var: &Variable) -> Result<Vec<f32>> {
        let io = |e| read_error(&self.path, e);
        let mut raw = vec![0u8; var.len];
        self.reader.seek(SeekFrom::Start(var.offset)).map_err(io)?;
        self.reader.read_exact(&mut raw).map_err(io)?;
        Ok(decode_values(&raw, var.dtype))
    }
}

/// Converts little-endian raw data of `dtype` to f32.
fn decode_values(raw: &[u8], dtype: DType) -> Vec<f32> {
    let chunks = raw.chunks_exact(dtype.size());
    match dtype {
        DType::F32 => chunks
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => chunks
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::BF16 => chunks
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::I8 => chunks.map(|c| f32::from(c[0] as i8)).collect(),
        DType::I16 => chunks
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DType::I32 => chunks
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
    }
}

/// Undoes CTranslate2's quantisation `q = round(w * scale)`: one scale for the
/// whole tensor (int16) or one per output row (int8).
fn dequantize(
    values: &mut [f32],
    scale: &[f32],
    var: &Variable,
) -> std::result::Result<(), String> {
    let rows = var.shape[0];
    let row_len = values.len() / rows.max(1);
    match scale.len() {
        1 => values.iter_mut().for_each(|v| *v /= scale[0]),
        n if n == rows => {
            for (row, &s) in values.chunks_mut(row_len).zip(scale) {
                row.iter_mut().for_each(|v| *v /= s);
            }
        }
        n => return Err(format!("{n} scales for {rows} rows")),
    }
    Ok(())
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::UnexpectedEof {
        Error::Format(format!("{} is truncated", path.display()))
    } else {
        Error::io(path, e)
    }
}

fn read_u8(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> std::io::Result<String> {
    let len = read_u16(r)?;
    let mut bytes = vec![0u8; len.into()];
    r.read_exact(&mut bytes)?;
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

#[cfg(test)]
#[path = "ct2_tests.rs"]
mod tests;
