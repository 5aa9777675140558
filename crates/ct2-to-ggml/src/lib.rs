//! Converts a faster-whisper (CTranslate2) model to whisper.cpp's ggml format,
//! so any faster-whisper model can run on whisper.cpp.
//!
//! Module map, in the order data flows:
//! - [`ct2`]: indexes `model.bin` and reads tensors on demand (dequantising
//!   int8/int16 weights).
//! - [`names`]: the CTranslate2 → whisper.cpp tensor name map, including the
//!   split of fused query/key/value projections, and the tensor order.
//! - [`vocab`]: `vocabulary.txt` (GPT-2 byte-level text) → raw token bytes.
//! - [`mel`]: the Slaney mel filterbank whisper.cpp reads from the file.
//! - [`quant`]: ggml's q8_0 and q5_1 block formats.
//! - [`ggml`]: the ggml file writer (f16 or quantised matrices).
//! - [`convert`]: one conversion, start to finish, written atomically.
//! - [`requant`]: reads an existing f16/f32 ggml file and writes it again,
//!   quantised, as whisper.cpp's `quantize` tool does.

pub mod convert;
pub mod ct2;
pub mod error;
pub mod ggml;
pub mod mel;
pub mod names;
pub mod quant;
pub mod requant;
pub mod vocab;

#[cfg(test)]
mod testutil;

pub use convert::{convert, Summary};
pub use error::{Error, Result};
pub use quant::WeightType;
pub use requant::requantize;
