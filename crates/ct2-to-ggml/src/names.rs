//! The tensor name map from faster-whisper (CTranslate2) to whisper.cpp.
//!
//! CTranslate2 fuses some projections that whisper.cpp (like OpenAI's
//! PyTorch model) keeps apart: a self-attention `linear_0` holds query, key
//! and value stacked row-wise, a cross-attention `linear_1` holds key and
//! value. A fused variable therefore maps to several [`Piece`]s, each one
//! block of rows. Whisper's key projections have no bias; CTranslate2 stores
//! a zero block there, which is checked and dropped.

use crate::error::{Error, Result};

/// One block of rows of a CTranslate2 variable and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The whisper.cpp tensor name; `None` for a block that must be all
    /// zeros and is dropped (the key bias).
    pub target: Option<String>,
    /// Which block of the first dimension, out of `of` equal blocks.
    pub index: usize,
    pub of: usize,
}

/// What becomes of a (non-scalar) CTranslate2 variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not stored in a ggml file: whisper.cpp ties the output projection to
    /// the token embedding.
    Unused,
    Pieces(Vec<Piece>),
}

impl Piece {
    fn whole(target: String) -> Self {
        Piece {
            target: Some(target),
            index: 0,
            of: 1,
        }
    }

    /// Cuts this piece's rows out of a row-major tensor; returns its shape and data.
    pub fn extract(
        &self,
        shape: &[usize],
        data: &[f32],
    ) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
        let Some(&rows) = shape.first() else {
            return Err("a scalar cannot be split".into());
        };
        if rows % self.of != 0 {
            return Err(format!(
                "{rows} rows do not split into {} equal blocks",
                self.of
            ));
        }
        let block_len = data.len() / self.of;
        let start = self.index * block_len;
        let mut block_shape = shape.to_vec();
        block_shape[0] = rows / self.of;
        Ok((block_shape, data[start..start + block_len].to_vec()))
    }
}

/// Maps a CTranslate2 variable name; unknown names are an error.
pub fn map_name(ct2: &str) -> Result<Mapping> {
    let unknown = || Error::UnknownTensor(ct2.to_owned());
    let parts: Vec<&str> = ct2.split('/').collect();
    let (&leaf, path) = parts.split_last().ok_or_else(unknown)?;
    let whole = |name: String| Ok(Mapping::Pieces(vec![Piece::whole(name)]));

    match (path, leaf) {
        (["decoder", "projection"], "weight") => return Ok(Mapping::Unused),
        (["decoder", "embeddings"], "weight") => {
            return whole("decoder.token_embedding.weight".into())
        }
        ([side @ ("encoder" | "decoder"), "position_encodings"], "encodings") => {
            return whole(format!("{side}.positional_embedding"))
        }
        _ => {}
    }

    let param = match leaf {
        "weight" | "gamma" => "weight",
        "bias" | "beta" => "bias",
        _ => return Err(unknown()),
    };
    let target = match path {
        ["encoder", conv @ ("conv1" | "conv2")] => format!("encoder.{conv}"),
        ["encoder", "layer_norm"] => "encoder.ln_post".into(),
        ["decoder", "layer_norm"] => "decoder.ln".into(),
        [side @ ("encoder" | "decoder"), layer, module @ ..] => {
            let i = layer_index(layer).ok_or_else(unknown)?;
            let block = format!("{side}.blocks.{i}");
            return block_mapping(&block, *side == "decoder", module, param).ok_or_else(unknown);
        }
        _ => return Err(unknown()),
    };
    whole(format!("{target}.{param}"))
}

/// Maps the part of a name below `…/layer_i/`.
fn block_mapping(block: &str, is_decoder: bool, module: &[&str], param: &str) -> Option<Mapping> {
    let whole = |m: &str| {
        Some(Mapping::Pieces(vec![Piece::whole(format!(
            "{block}.{m}.{param}"
        ))]))
    };
    match module {
        ["self_attention", "layer_norm"] => whole("attn_ln"),
        ["self_attention", "linear_0"] => {
            Some(fused(block, "attn", &["query", "key", "value"], param))
        }
        ["self_attention", "linear_1"] => whole("attn.out"),
        ["attention", "layer_norm"] if is_decoder => whole("cross_attn_ln"),
        ["attention", "linear_0"] if is_decoder => whole("cross_attn.query"),
        ["attention", "linear_1"] if is_decoder => {
            Some(fused(block, "cross_attn", &["key", "value"], param))
        }
        ["attention", "linear_2"] if is_decoder => whole("cross_attn.out"),
        ["ffn", "layer_norm"] => whole("mlp_ln"),
        ["ffn", "linear_0"] => whole("mlp.0"),
        ["ffn", "linear_1"] => whole("mlp.2"),
        _ => None,
    }
}

/// Splits a row-stacked projection; the key block of a bias is dropped.
fn fused(block: &str, attn: &str, projections: &[&str], param: &str) -> Mapping {
    let of = projections.len();
    let pieces = projections
        .iter()
        .enumerate()
        .map(|(index, proj)| Piece {
            target: (param == "weight" || *proj != "key")
                .then(|| format!("{block}.{attn}.{proj}.{param}")),
            index,
            of,
        })
        .collect();
    Mapping::Pieces(pieces)
}

fn layer_index(segment: &str) -> Option<usize> {
    segment.strip_prefix("layer_")?.parse().ok()
}

/// Number of `layer_i` blocks under `side` ("encoder" or "decoder").
pub fn count_layers<'a>(side: &str, names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(side)?.strip_prefix('/')?;
            layer_index(rest.split('/').next()?)
        })
        .max()
        .map_or(0, |i| i + 1)
}

/// Every tensor whisper.cpp loads, in the order OpenAI's PyTorch state dict
/// (and so the official ggml files) lists them.
pub fn expected_names(n_audio_layer: usize, n_text_layer: usize) -> Vec<String> {
    let mut names = vec!["encoder.positional_embedding".to_string()];
    names.extend(weight_bias("encoder.conv1"));
    names.extend(weight_bias("encoder.conv2"));
    for i in 0..n_audio_layer {
        names.extend(block_names(&format!("encoder.blocks.{i}"), false));
    }
    names.extend(weight_bias("encoder.ln_post"));
    names.push("decoder.positional_embedding".into());
    names.push("decoder.token_embedding.weight".into());
    for i in 0..n_text_layer {
        names.extend(block_names(&format!("decoder.blocks.{i}"), true));
    }
    names.extend(weight_bias("decoder.ln"));
    names
}

fn block_names(block: &str, cross: bool) -> Vec<String> {
    let attention = |attn: &str| {
        let mut v = weight_bias(&format!("{block}.{attn}.query"));
        v.push(format!("{block}.{attn}.key.weight"));
        v.extend(weight_bias(&format!("{block}.{attn}.value")));
        v.extend(weight_bias(&format!("{block}.{attn}.out")));
        v.extend(weight_bias(&format!("{block}.{attn}_ln")));
        v
    };
    let mut names = attention("attn");
    if cross {
        names.extend(attention("cross_attn"));
    }
    for module in ["mlp.0", "mlp.2", "mlp_ln"] {
        names.extend(weight_bias(&format!("{block}.{module}")));
    }
    names
}

fn weight_bias(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}.weight"), format!("{prefix}.bias")]
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
