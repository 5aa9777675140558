//! Tests of the `model.bin` reader on synthetic files.

use std::io::Cursor;
use std::path::Path;

use super::*;
use crate::testutil::{ramp, Ct2Builder};

fn open(bytes: Vec<u8>) -> Result<Ct2Model<Cursor<Vec<u8>>>> {
    Ct2Model::from_reader(Cursor::new(bytes), Path::new("model.bin"))
}

#[test]
fn indexes_variables_and_reads_data_of_each_float_type() {
    let mut b = Ct2Builder::new();
    b.f16("a/weight", &[2, 3], &ramp(-1.0, 6))
        .f32("a/bias", &[2], &[0.1, -7.25])
        .i16_scalar("encoder/num_heads", 6);
    let mut m = open(b.build()).unwrap();

    assert_eq!(
        (m.version, m.spec.as_str(), m.revision),
        (6, "WhisperSpec", 3)
    );
    let names: Vec<_> = m.variables().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a/weight", "a/bias", "encoder/num_heads"]);
    assert!(m.variable("encoder/num_heads").unwrap().is_scalar());

    let (shape, w) = m.read_f32("a/weight").unwrap();
    assert_eq!(shape, [2, 3]);
    assert_eq!(w, ramp(-1.0, 6));
    assert_eq!(m.read_f32("a/bias").unwrap().1, [0.1, -7.25]);
    assert_eq!(m.read_int_scalar("encoder/num_heads").unwrap(), Some(6));
    assert_eq!(m.read_int_scalar("decoder/num_heads").unwrap(), None);
}

#[test]
fn follows_aliases() {
    let mut b = Ct2Builder::new();
    b.f16("decoder/embeddings/weight", &[2, 2], &[1.0, 2.0, 3.0, 4.0])
        .alias("decoder/projection/weight", "decoder/embeddings/weight");
    let mut m = open(b.build()).unwrap();
    assert_eq!(m.aliases().len(), 1);
    let (_, v) = m.read_f32("decoder/projection/weight").unwrap();
    assert_eq!(v, [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn dequantizes_int8_weights_per_row() {
    let mut b = Ct2Builder::new();
    b.i8("l/weight", &[2, 2], &[127, -64, 10, 20])
        .f32("l/weight_scale", &[2], &[127.0, 10.0]);
    let mut m = open(b.build()).unwrap();
    assert!(m.is_scale_of_weight("l/weight_scale"));
    assert!(!m.is_scale_of_weight("l/weight"));
    let (_, v) = m.read_f32("l/weight").unwrap();
    assert_eq!(v, [1.0, -64.0 / 127.0, 1.0, 2.0]);
}

#[test]
fn integer_tensor_without_scale_is_an_error() {
    let mut b = Ct2Builder::new();
    b.i8("l/weight", &[1, 2], &[1, 2]);
    let err = open(b.build()).unwrap().read_f32("l/weight").unwrap_err();
    assert!(err.to_string().contains("l/weight_scale"), "{err}");
}

#[test]
fn rejects_other_binary_versions() {
    let mut b = Ct2Builder::new();
    b.version = 7;
    let err = open(b.build()).err().unwrap();
    assert!(matches!(err, Error::UnsupportedVersion(7)), "{err}");
    assert!(err.to_string().contains("4..=6"), "{err}");
}

#[test]
fn reports_truncation_and_size_mismatch() {
    let mut b = Ct2Builder::new();
    b.f32("x", &[4], &[1.0, 2.0, 3.0, 4.0]);
    let mut bytes = b.build();
    bytes.truncate(bytes.len() - 6);
    let err = open(bytes).err().unwrap();
    assert!(err.to_string().contains("truncated"), "{err}");

    let mut b = Ct2Builder::new();
    b.raw("x", &[4], crate::testutil::F32, vec![0; 12]);
    let err = open(b.build()).err().unwrap();
    assert!(err.to_string().contains("stores 12 bytes"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let mut m = open(Ct2Builder::new().build()).unwrap();
    let err = m.read_f32("encoder/conv1/weight").unwrap_err();
    assert!(matches!(err, Error::MissingTensor(ref n) if n == "encoder/conv1/weight"));
}
