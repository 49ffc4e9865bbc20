//! Writes the generated part of the fuzz seed corpora under `tests/fuzz/corpus/`: small
//! safetensors files (f32 / f16 / bf16, legacy attention names) and a tiny compiled artifact with
//! its plan. The other seeds (manifests, config.json, rbln_config.json, images) are copies of
//! files in the repository; `tests/fuzz/README.md` lists where each comes from.
//!
//! `cargo run -p fuzz-targets --example make_seeds` from the repository root.

use plugin_api::graph::{Activation, GraphBuilder};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn safetensors_seed(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| {
            let n: usize = shape.iter().product();
            let width = if *dtype == Dtype::F32 { 4 } else { 2 };
            (0..n * width).map(|i| (i * 37 % 251) as u8).collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, dtype, shape), bytes)| {
            let view = TensorView::new(*dtype, shape.clone(), bytes).expect("a valid view");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, &None).expect("serialize")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");

    let st = root.join("safetensors");
    write(
        &st,
        "f32.safetensors",
        &safetensors_seed(&[
            ("encoder.conv_in.weight", Dtype::F32, vec![4, 3, 3, 3]),
            ("encoder.conv_in.bias", Dtype::F32, vec![4]),
        ]),
    );
    write(
        &st,
        "f16.safetensors",
        &safetensors_seed(&[
            ("decoder.conv_out.weight", Dtype::F16, vec![3, 4, 3, 3]),
            ("decoder.conv_out.bias", Dtype::F16, vec![3]),
        ]),
    );
    write(
        &st,
        "bf16_legacy_attention.safetensors",
        &safetensors_seed(&[
            (
                "decoder.mid_block.attentions.0.query.weight",
                Dtype::BF16,
                vec![4, 4],
            ),
            (
                "decoder.mid_block.attentions.0.query.bias",
                Dtype::BF16,
                vec![4],
            ),
            ("quant_conv.weight", Dtype::BF16, vec![8, 8, 1, 1]),
        ]),
    );
    write(&st, "empty.safetensors", &safetensors_seed(&[]));

    let mut g = GraphBuilder::new("seed");
    let x = g.input("x", vec![1, 3, 6, 7]);
    let w = g.constant("conv.weight", vec![4, 3, 3, 3], vec![0.01; 108]);
    let b = g.constant("conv.bias", vec![4], vec![0.1; 4]);
    let gamma = g.constant("norm.weight", vec![4], vec![1.0; 4]);
    let beta = g.constant("norm.bias", vec![4], vec![0.0; 4]);
    let c = g.conv2d("conv", x, w, Some(b), [1, 1], [1, 1, 1, 1]);
    let n = g.group_norm("norm", c, gamma, beta, 2, 1e-6);
    let s = g.activation("act", n, Activation::Silu);
    let up = g.upsample_nearest_2x("up", s);
    g.output("y", up);
    let graph = g.finish().expect("a valid graph");
    let bytes = rbln_npu::compiler::compile(graph, "{}", &|_, _, _| {}).expect("compile");
    write(&root.join("artifact"), "tiny.rbln", &bytes);
    // artifact_plan wraps a plan in the one-plan layout of format version 3.
    let plan = rbln_npu::artifact::decode(&bytes).expect("decode");
    write(
        &root.join("artifact_plan"),
        "tiny.json",
        &serde_json::to_vec(&plan).expect("serialize"),
    );
    let z: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let json_dir = root.join("oip_json");
    let flat = serde_json::json!({"id": "a", "parameters": {"timeout": 1000000},
        "inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z}],
        "outputs": [{"name": "sample", "parameters": {"binary_data": false}}]});
    write(&json_dir, "flat.json", flat.to_string().as_bytes());
    let nested: Vec<Vec<Vec<f32>>> = z
        .chunks(64)
        .map(|c| c.chunks(8).map(<[f32]>::to_vec).collect())
        .collect();
    let nested = serde_json::json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8],
        "datatype": "FP32", "data": [nested]}]});
    write(&json_dir, "nested.json", nested.to_string().as_bytes());
    let bytes_input = serde_json::json!({"inputs": [{"name": "image", "shape": [1],
        "datatype": "BYTES", "data": ["aGVsbG8="]}]});
    write(&json_dir, "bytes.json", bytes_input.to_string().as_bytes());

    let bin_dir = root.join("oip_binary");
    let header = serde_json::json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8],
        "datatype": "FP32", "parameters": {"binary_data_size": 1024}}],
        "parameters": {"binary_data_output": true}})
    .to_string();
    let mut body = (header.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    body.extend(z.iter().flat_map(|v| v.to_le_bytes()));
    write(&bin_dir, "fp32.bin", &body);
    let png = b"\x89PNG\r\n\x1a\n";
    let header = serde_json::json!({"inputs": [{"name": "image", "shape": [1],
        "datatype": "BYTES", "parameters": {"binary_data_size": 4 + png.len()}}]})
    .to_string();
    let mut body = (header.len() as u16).to_le_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    body.extend_from_slice(&(png.len() as u32).to_le_bytes());
    body.extend_from_slice(png);
    write(&bin_dir, "bytes.bin", &body);

    let img = root.join("image");
    let rgb = image::RgbImage::from_fn(12, 8, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, 128])
    });
    for (name, format) in [
        ("rgb.jpg", image::ImageFormat::Jpeg),
        ("rgb.png", image::ImageFormat::Png),
    ] {
        let mut out = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut out, format).expect("encode an image");
        write(&img, name, &out.into_inner());
    }
    let gray = image::GrayAlphaImage::from_fn(5, 9, |x, y| image::LumaA([(x * y) as u8, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    gray.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode an image");
    write(&img, "gray_alpha.png", &out.into_inner());
    eprintln!("wrote the generated seeds under {}", root.display());
}
