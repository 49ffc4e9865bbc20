//! A test-only backend: a "compiler" that serializes the graph and a "device" that evaluates it
//! with plain scalar loops. Slow and simple on purpose: it is the reference the VAE graphs are
//! checked against (with outputs from diffusers), independent of rbln-npu.

#![allow(dead_code)]

use plugin_api::abi_stable::sabi_trait::TD_Opaque;
use plugin_api::abi_stable::std_types::{RSlice, RStr, RString, RVec};
use plugin_api::graph::{Activation, Graph, GraphBlob, Op, ValueRef};
use plugin_api::{
    Backend, Compiler, Compiler_TO, Device, Device_TO, Executable, ExecutableBox, Executable_TO,
    NamedTensor, PluginError, PluginResult, ProgressBox, Tensor, TensorSpec,
};
use std::sync::{Arc, Mutex};

/// Options strings the compiler received.
pub type Seen = Arc<Mutex<Vec<String>>>;

struct RefCompiler(Seen);
struct RefDevice;
struct RefExe(Graph);

pub fn backend() -> (Backend, Seen) {
    let seen = Seen::default();
    let b = Backend {
        compiler: Compiler_TO::from_value(RefCompiler(seen.clone()), TD_Opaque),
        device: Device_TO::from_value(RefDevice, TD_Opaque),
    };
    (b, seen)
}

impl Compiler for RefCompiler {
    fn name(&self) -> RString {
        "ref".into()
    }
    fn artifact_extension(&self) -> RString {
        "ref".into()
    }
    fn compile(
        &self,
        graph: GraphBlob,
        options: RStr<'_>,
        _p: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        plugin_api::guard(|| {
            self.0.lock().unwrap().push(options.to_string());
            let g = graph.into_graph()?;
            g.validate()?;
            let json = serde_json::to_vec(&g).unwrap();
            let mut out = (json.len() as u64).to_le_bytes().to_vec();
            out.extend(json);
            for c in &g.constants {
                out.extend(c.data.iter().flat_map(|v| v.to_le_bytes()));
            }
            Ok(RVec::from(out))
        })
    }
    fn inspect(&self, _a: RSlice<'_, u8>) -> PluginResult<RString> {
        plugin_api::guard(|| Ok("ref".into()))
    }
}

impl Device for RefDevice {
    fn name(&self) -> RString {
        "ref".into()
    }
    fn description(&self) -> RString {
        "scalar reference interpreter (tests only)".into()
    }
    fn load(&self, a: RSlice<'_, u8>) -> PluginResult<ExecutableBox> {
        plugin_api::guard(|| {
            let bad = || PluginError::invalid("not a ref artifact");
            let n = u64::from_le_bytes(a.get(..8).ok_or_else(bad)?.try_into().unwrap()) as usize;
            let json = a.get(8..8 + n).ok_or_else(bad)?;
            let mut g: Graph = serde_json::from_slice(json).map_err(|_| bad())?;
            let mut rest = a.get(8 + n..).ok_or_else(bad)?;
            for c in &mut g.constants {
                let k: usize = c.shape.iter().product();
                let bytes = rest.get(..4 * k).ok_or_else(bad)?;
                c.data = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                rest = &rest[4 * k..];
            }
            Ok(Executable_TO::from_value(RefExe(g), TD_Opaque))
        })
    }
}

impl Executable for RefExe {
    fn inputs(&self) -> RVec<TensorSpec> {
        self.0
            .inputs
            .iter()
            .map(|i| TensorSpec::f32(i.name.as_str(), &i.shape))
            .collect()
    }
    fn outputs(&self) -> RVec<TensorSpec> {
        let shapes = self.0.infer_shapes().unwrap();
        self.0
            .outputs
            .iter()
            .map(|o| TensorSpec::f32(o.name.as_str(), self.0.value_shape(o.value, &shapes)))
            .collect()
    }
    fn run(&self, inputs: RVec<NamedTensor>) -> PluginResult<RVec<NamedTensor>> {
        plugin_api::guard(|| {
            let g = &self.0;
            let shapes = g.infer_shapes()?;
            let mut vals: Vec<Vec<f32>> = Vec::new();
            let inp: Vec<Vec<f32>> = g
                .inputs
                .iter()
                .map(|i| {
                    let t = inputs
                        .iter()
                        .find(|t| t.name.as_str() == i.name)
                        .expect("input given");
                    assert_eq!(t.tensor.shape(), i.shape);
                    t.tensor.data().to_vec()
                })
                .collect();
            for (k, node) in g.nodes.iter().enumerate() {
                let get = |v: ValueRef| -> (&[f32], &[usize]) {
                    match v {
                        ValueRef::Input(j) => (&inp[j], &g.inputs[j].shape),
                        ValueRef::Const(j) => (&g.constants[j].data, &g.constants[j].shape),
                        ValueRef::Node(j) => (&vals[j], &shapes[j]),
                    }
                };
                let ins: Vec<(&[f32], &[usize])> = node.inputs.iter().map(|&v| get(v)).collect();
                vals.push(eval(&node.op, &ins, &shapes[k]));
            }
            let out = g
                .outputs
                .iter()
                .map(|o| {
                    let data = match o.value {
                        ValueRef::Node(j) => vals[j].clone(),
                        ValueRef::Input(j) => inp[j].clone(),
                        ValueRef::Const(j) => g.constants[j].data.clone(),
                    };
                    let shape = g.value_shape(o.value, &shapes).to_vec();
                    NamedTensor::new(o.name.as_str(), Tensor::new(shape, data).unwrap())
                })
                .collect();
            Ok(out)
        })
    }
}

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

fn strides(s: &[usize]) -> Vec<usize> {
    let mut st = vec![1; s.len()];
    for i in (0..s.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * s[i + 1];
    }
    st
}

fn eval(op: &Op, ins: &[(&[f32], &[usize])], out_shape: &[usize]) -> Vec<f32> {
    let n_out: usize = out_shape.iter().product();
    let (x, xs) = ins[0];
    match op {
        Op::Conv2d(c) => {
            let (w, ws) = ins[1];
            let [n, o, oh, ow] = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
            let (ci, h, wd, kh, kw) = (xs[1], xs[2], xs[3], ws[2], ws[3]);
            let mut out = vec![0f32; n_out];
            for b in 0..n {
                for oc in 0..o {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = ins.get(2).map_or(0.0, |bias| bias.0[oc] as f64);
                            for ic in 0..ci {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let iy =
                                            (y * c.stride[0] + ky) as isize - c.padding[0] as isize;
                                        let ix = (xx * c.stride[1] + kx) as isize
                                            - c.padding[1] as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize
                                        {
                                            continue;
                                        }
                                        let xv =
                                            x[((b * ci + ic) * h + iy as usize) * wd + ix as usize];
                                        acc +=
                                            (xv * w[((oc * ci + ic) * kh + ky) * kw + kx]) as f64;
                                    }
                                }
                            }
                            out[((b * o + oc) * oh + y) * ow + xx] = acc as f32;
                        }
                    }
                }
            }
            out
        }
        Op::GroupNorm(gn) => {
            let (gamma, beta) = (ins[1].0, ins[2].0);
            let (n, c) = (xs[0], xs[1]);
            let sp: usize = xs[2..].iter().product();
            let cg = c / gn.num_groups;
            let mut out = vec![0f32; n_out];
            for b in 0..n {
                for g in 0..gn.num_groups {
                    let start = (b * c + g * cg) * sp;
                    let seg = &x[start..start + cg * sp];
                    let mean = seg.iter().map(|&v| v as f64).sum::<f64>() / seg.len() as f64;
                    let var = seg.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()
                        / seg.len() as f64;
                    let inv = 1.0 / (var + gn.eps as f64).sqrt();
                    for (i, &v) in seg.iter().enumerate() {
                        let ch = g * cg + i / sp;
                        out[start + i] = ((v as f64 - mean) * inv) as f32 * gamma[ch] + beta[ch];
                    }
                }
            }
            out
        }
        Op::Activation { kind } => x
            .iter()
            .map(|&v| {
                let v = v as f64;
                (match kind {
                    Activation::Silu => v / (1.0 + (-v).exp()),
                    Activation::Relu => v.max(0.0),
                    Activation::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
                    Activation::Mish => v * (1.0 + v.exp()).ln().tanh(),
                }) as f32
            })
            .collect(),
        Op::Add => x.iter().zip(ins[1].0).map(|(a, b)| a + b).collect(),
        Op::Scale(s) => x.iter().map(|v| v * s.factor).collect(),
        Op::UpsampleNearest2x => {
            let (h, w) = (xs[2], xs[3]);
            let mut out = vec![0f32; n_out];
            for p in 0..xs[0] * xs[1] {
                for y in 0..2 * h {
                    for xx in 0..2 * w {
                        out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
                    }
                }
            }
            out
        }
        Op::Linear => {
            let (w, ws) = ins[1];
            let (nf, k) = (ws[0], ws[1]);
            let rows = x.len() / k;
            let mut out = vec![0f32; rows * nf];
            for r in 0..rows {
                for j in 0..nf {
                    let mut acc = ins.get(2).map_or(0.0, |b| b.0[j] as f64);
                    for i in 0..k {
                        acc += (x[r * k + i] * w[j * k + i]) as f64;
                    }
                    out[r * nf + j] = acc as f32;
                }
            }
            out
        }
        Op::MatMul(m) => {
            let (b, _) = ins[1];
            let r = xs.len();
            let (mm, k) = (xs[r - 2], xs[r - 1]);
            let nn = out_shape[r - 1];
            let batches = x.len() / (mm * k);
            let mut out = vec![0f32; n_out];
            for bt in 0..batches {
                for i in 0..mm {
                    for j in 0..nn {
                        let mut acc = 0f64;
                        for l in 0..k {
                            let bv = if m.transpose_b {
                                b[bt * nn * k + j * k + l]
                            } else {
                                b[bt * k * nn + l * nn + j]
                            };
                            acc += (x[bt * mm * k + i * k + l] * bv) as f64;
                        }
                        out[bt * mm * nn + i * nn + j] = acc as f32;
                    }
                }
            }
            out
        }
        Op::Softmax => {
            let d = *xs.last().unwrap();
            x.chunks(d)
                .flat_map(|row| {
                    let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f64> = row.iter().map(|&v| ((v - mx) as f64).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.into_iter().map(move |v| (v / s) as f32)
                })
                .collect()
        }
        Op::Reshape(_) => x.to_vec(),
        Op::Transpose(t) => {
            let (is, os) = (strides(xs), strides(out_shape));
            (0..n_out)
                .map(|flat| {
                    let src: usize = (0..out_shape.len())
                        .map(|d| (flat / os[d] % out_shape[d]) * is[t.perm[d]])
                        .sum();
                    x[src]
                })
                .collect()
        }
        Op::Slice(s) => {
            let st = strides(xs);
            let os = strides(out_shape);
            (0..n_out)
                .map(|flat| {
                    let src: usize = (0..out_shape.len())
                        .map(|d| {
                            let i = flat / os[d] % out_shape[d];
                            (if d == s.axis { i + s.start } else { i }) * st[d]
                        })
                        .sum();
                    x[src]
                })
                .collect()
        }
        other => panic!(
            "op {} not supported by the reference interpreter",
            other.kind_name()
        ),
    }
}
