//! Tests of the name map and the split of fused projections.

use super::*;

/// The whole-tensor target of `ct2`, panicking on anything else.
fn target(ct2: &str) -> String {
    match map_name(ct2).unwrap() {
        Mapping::Pieces(p) if p.len() == 1 && p[0].of == 1 => p[0].target.clone().unwrap(),
        other => panic!("{ct2} mapped to {other:?}"),
    }
}

fn targets(ct2: &str) -> Vec<Option<String>> {
    match map_name(ct2).unwrap() {
        Mapping::Pieces(p) => p.into_iter().map(|p| p.target).collect(),
        Mapping::Unused => panic!("{ct2} unused"),
    }
}

#[test]
fn maps_top_level_tensors() {
    let cases = [
        ("encoder/conv1/weight", "encoder.conv1.weight"),
        ("encoder/conv2/bias", "encoder.conv2.bias"),
        (
            "encoder/position_encodings/encodings",
            "encoder.positional_embedding",
        ),
        ("encoder/layer_norm/gamma", "encoder.ln_post.weight"),
        ("encoder/layer_norm/beta", "encoder.ln_post.bias"),
        (
            "decoder/embeddings/weight",
            "decoder.token_embedding.weight",
        ),
        (
            "decoder/position_encodings/encodings",
            "decoder.positional_embedding",
        ),
        ("decoder/layer_norm/gamma", "decoder.ln.weight"),
    ];
    for (ct2, ggml) in cases {
        assert_eq!(target(ct2), ggml, "{ct2}");
    }
    assert_eq!(
        map_name("decoder/projection/weight").unwrap(),
        Mapping::Unused
    );
}

#[test]
fn maps_block_tensors() {
    let cases = [
        (
            "encoder/layer_3/self_attention/layer_norm/gamma",
            "encoder.blocks.3.attn_ln.weight",
        ),
        (
            "encoder/layer_0/self_attention/linear_1/bias",
            "encoder.blocks.0.attn.out.bias",
        ),
        (
            "encoder/layer_1/ffn/layer_norm/beta",
            "encoder.blocks.1.mlp_ln.bias",
        ),
        (
            "encoder/layer_1/ffn/linear_0/weight",
            "encoder.blocks.1.mlp.0.weight",
        ),
        (
            "decoder/layer_11/ffn/linear_1/weight",
            "decoder.blocks.11.mlp.2.weight",
        ),
        (
            "decoder/layer_2/attention/layer_norm/gamma",
            "decoder.blocks.2.cross_attn_ln.weight",
        ),
        (
            "decoder/layer_2/attention/linear_0/bias",
            "decoder.blocks.2.cross_attn.query.bias",
        ),
        (
            "decoder/layer_2/attention/linear_2/weight",
            "decoder.blocks.2.cross_attn.out.weight",
        ),
    ];
    for (ct2, ggml) in cases {
        assert_eq!(target(ct2), ggml, "{ct2}");
    }
}

#[test]
fn splits_fused_projections_and_drops_key_bias() {
    let b = "encoder.blocks.0.attn";
    assert_eq!(
        targets("encoder/layer_0/self_attention/linear_0/weight"),
        [
            Some(format!("{b}.query.weight")),
            Some(format!("{b}.key.weight")),
            Some(format!("{b}.value.weight"))
        ]
    );
    assert_eq!(
        targets("encoder/layer_0/self_attention/linear_0/bias"),
        [
            Some(format!("{b}.query.bias")),
            None,
            Some(format!("{b}.value.bias"))
        ]
    );
    let c = "decoder.blocks.1.cross_attn";
    assert_eq!(
        targets("decoder/layer_1/attention/linear_1/weight"),
        [
            Some(format!("{c}.key.weight")),
            Some(format!("{c}.value.weight"))
        ]
    );
    assert_eq!(
        targets("decoder/layer_1/attention/linear_1/bias"),
        [None, Some(format!("{c}.value.bias"))]
    );
}

#[test]
fn unknown_names_are_errors() {
    for name in [
        "encoder/layer_0/attention/linear_0/weight", // no cross-attention in the encoder
        "encoder/layer_x/ffn/linear_0/weight",
        "decoder/layer_0/ffn/linear_9/weight",
        "decoder/layer_0/ffn/linear_0/kernel",
        "encoder/conv3/weight",
        "lm_head/weight",
    ] {
        let err = map_name(name).unwrap_err();
        assert!(
            matches!(err, Error::UnknownTensor(ref n) if n == name),
            "{name}: {err}"
        );
    }
}

#[test]
fn extract_cuts_row_blocks() {
    // A fused [3·2, 2] weight: rows 0-1 query, 2-3 key, 4-5 value.
    let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let piece = |index| Piece {
        target: None,
        index,
        of: 3,
    };
    assert_eq!(
        piece(0).extract(&[6, 2], &data).unwrap(),
        (vec![2, 2], vec![0.0, 1.0, 2.0, 3.0])
    );
    assert_eq!(
        piece(1).extract(&[6, 2], &data).unwrap().1,
        [4.0, 5.0, 6.0, 7.0]
    );
    assert_eq!(
        piece(2).extract(&[6, 2], &data).unwrap().1,
        [8.0, 9.0, 10.0, 11.0]
    );
    // And a fused bias.
    assert_eq!(
        piece(2).extract(&[6], &data[..6]).unwrap(),
        (vec![2], vec![4.0, 5.0])
    );
    assert!(piece(0).extract(&[4, 3], &data).is_err());
}

#[test]
fn counts_layers() {
    let names = [
        "encoder/layer_0/ffn/linear_0/weight",
        "encoder/layer_3/x",
        "decoder/layer_1/y",
        "encoder/conv1/weight",
    ];
    assert_eq!(count_layers("encoder", names), 4);
    assert_eq!(count_layers("decoder", names), 2);
    assert_eq!(count_layers("decoder", ["encoder/layer_0/x"]), 0);
}

#[test]
fn expected_names_match_the_official_tensor_count() {
    // tiny: 4 + 4 layers → 167 tensors, as in ggml-tiny.en.bin.
    let names = expected_names(4, 4);
    assert_eq!(names.len(), 167);
    assert_eq!(names[0], "encoder.positional_embedding");
    assert_eq!(names[5], "encoder.blocks.0.attn.query.weight");
    assert_eq!(names.last().unwrap(), "decoder.ln.bias");
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}
