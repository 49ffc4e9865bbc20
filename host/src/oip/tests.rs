use super::*;
use serde_json::json;

const LIMITS: Limits = Limits {
    max_rows: 8,
    rows_reason: "test",
};

fn body(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn one_input(v: serde_json::Value) -> Result<Vec<f32>, CodecError> {
    let b = body(json!({"inputs": [v]}));
    let req = decode(&b, None)?;
    let input = &req.inputs[0];
    input.fp32(&input.dims()?)
}

#[test]
fn flat_and_exactly_nested_data_decode_alike() {
    let flat = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 2],
                               "data": [1, 2, 3, 4]}))
    .unwrap();
    let nested = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 2],
                                 "data": [[1, 2], [3, 4]]}))
    .unwrap();
    assert_eq!(flat, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(nested, flat);
    let regrouped = one_input(json!({"name": "z", "datatype": "FP32", "shape": [1, 2, 2],
                                    "data": [[1, 2], [3, 4]]}))
    .unwrap();
    assert_eq!(regrouped, flat);
}

#[test]
fn ragged_or_mis_nested_data_is_refused_where_it_goes_wrong() {
    let e = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 2],
                            "data": [[1, 2], [3, 4, 5]]}))
    .unwrap_err();
    assert!(
        e.0.contains("data[1] has 3 elements") && e.0.contains("ragged"),
        "{e}"
    );
    let e = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 1],
                            "data": [[1], [[2]]]}))
    .unwrap_err();
    assert!(
        e.0.contains("data[1][0] is a list") && e.0.contains("ragged"),
        "{e}"
    );
    let e = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 3],
                            "data": [[1, 2], [3, 4]]}))
    .unwrap_err();
    assert!(e.0.contains("needs 6 elements, data has [2, 2]"), "{e}");
    let e = one_input(json!({"name": "z", "datatype": "FP32", "shape": [2, 2],
                            "data": [1, [2, 3, 4]]}))
    .unwrap_err();
    assert!(e.0.contains("`z`"), "{e}");
}

#[test]
fn numbers_outside_fp32_name_the_input_and_index() {
    let e = one_input(json!({"name": "z", "datatype": "FP32", "shape": [3],
                            "data": [0.5, 1e39, 2]}))
    .unwrap_err();
    assert!(e.0.contains("`z`") && e.0.contains("data[1]"), "{e}");
    assert!(
        one_input(json!({"name": "z", "datatype": "FP32", "shape": [1],
                            "data": [3.0e38]}))
        .is_ok()
    );
}

#[test]
fn huge_shapes_never_wrap_or_allocate() {
    let e = one_input(json!({"name": "z", "datatype": "FP32",
                            "shape": [1125899906842624u64, 4, 64, 64],
                            "parameters": {"binary_data_size": 0}}))
    .unwrap_err();
    assert!(e.0.contains("more elements than can be addressed"), "{e}");
    let e = one_input(json!({"name": "z", "datatype": "FP32",
                            "shape": [1000000000000u64, 4, 64, 64], "data": [1, 2, 3]}))
    .unwrap_err();
    assert!(e.0.contains("needs 16384000000000000 elements"), "{e}");
    let b = body(
        json!({"inputs": [{"name": "z", "datatype": "FP32", "shape": [9, 1],
                                    "data": [1]}]}),
    );
    let req = decode(&b, None).unwrap();
    let e = req.inputs[0].check_rows(9, &LIMITS).unwrap_err();
    assert!(e.0.contains("limit of 8 rows"), "{e}");
}

#[test]
fn binary_parts_are_claimed_in_order_and_checked() {
    let mut b = body(json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
        {"name": "b", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}));
    let n = b.len();
    for v in [1.0f32, 2.0, 3.0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let req = decode(&b, Some(n)).unwrap();
    assert_eq!(req.inputs[1].fp32(&[2]).unwrap(), [2.0, 3.0]);
    assert!(req.inputs[0].fp32(&[2]).unwrap_err().0.contains("needs 8"));
    b.extend_from_slice(&[0; 4]);
    assert!(decode(&b, Some(n)).unwrap_err().0.contains("unclaimed"));
    assert!(decode(&b[..n + 6], Some(n))
        .unwrap_err()
        .0
        .contains("announced"));
    assert!(decode(&b, Some(b.len() + 1)).is_err());
    assert_eq!(header_length(Some(b" 12 ")).unwrap(), Some(12));
    assert!(header_length(Some(b"x")).is_err());
}

#[test]
fn responses_put_binary_outputs_after_the_json() {
    let data = [1.0f32, 2.0];
    let e = encode(
        "m",
        Some("7"),
        &[
            OutputTensor {
                name: "a",
                shape: vec![1, 2],
                data: OutputData::Fp32(&data),
                binary: false,
            },
            OutputTensor {
                name: "b",
                shape: vec![1, 2],
                data: OutputData::Fp32(&data),
                binary: true,
            },
            OutputTensor {
                name: "c",
                shape: vec![1],
                data: OutputData::Bytes(b"png"),
                binary: true,
            },
        ],
    );
    let head: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
    assert_eq!(head["id"], "7");
    assert_eq!(head["outputs"][0]["data"], json!([1.0, 2.0]));
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert_eq!(head["outputs"][2]["parameters"]["binary_data_size"], 7);
    assert_eq!(e.binary.len(), 15);
    assert_eq!(&e.binary[8..12], &3u32.to_le_bytes());
}
