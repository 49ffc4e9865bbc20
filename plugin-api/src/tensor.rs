//! FFI-safe tensors. Compute is `f32`; weights in other dtypes are upcast by the model plugin
//! before they enter a graph.

use crate::error::PluginError;
use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;
use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// Element type of a tensor as declared in signatures and configs.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float: the compute type.
    F32,
    /// 16-bit IEEE float: accepted in checkpoints, upcast to f32.
    F16,
    /// bfloat16: accepted in checkpoints, upcast to f32.
    BF16,
}

impl DType {
    /// The name used in `rbln_config.json` (`"float32"`, `"float16"`, `"bfloat16"`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }
    /// Parses a name as written by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        match name {
            "float32" | "fp32" | "f32" => Some(DType::F32),
            "float16" | "fp16" | "f16" => Some(DType::F16),
            "bfloat16" | "bf16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// A dense, row-major `f32` tensor that can cross the plugin boundary.
///
/// Invariant (checked by [`Tensor::new`]): `data.len() == shape.iter().product()`.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq)]
pub struct Tensor {
    shape: RVec<u64>,
    data: RVec<f32>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape.as_slice())
    }
}

/// Formats a shape as `[1, 3, 64, 64]`.
pub fn shape_str<T: fmt::Debug>(shape: &[T]) -> String {
    format!("{shape:?}")
}

impl Tensor {
    /// Creates a tensor, checking that `data` holds exactly `product(shape)` elements (the
    /// product computed with checked arithmetic: a shape whose product overflows is refused).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, PluginError> {
        let Some(n) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
            return Err(PluginError::invalid(format!(
                "tensor of shape {} has more elements than can be addressed",
                shape_str(&shape)
            )));
        };
        if n != data.len() {
            return Err(PluginError::invalid(format!(
                "tensor of shape {} needs {n} elements, got {}",
                shape_str(&shape),
                data.len()
            )));
        }
        Ok(Tensor {
            shape: shape.into_iter().map(|d| d as u64).collect(),
            data: RVec::from(data),
        })
    }
    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(shape, vec![0.0; n]).expect("length matches by construction")
    }
    /// The shape as `usize`s.
    pub fn shape(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }
    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Consumes the tensor, returning shape and data.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        let shape = self.shape();
        (shape, self.data.into_vec())
    }
    /// Converts to an ndarray.
    pub fn to_ndarray(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape()), self.data.to_vec())
            .expect("tensor invariant: data length matches shape")
    }
    /// Converts from an ndarray (any memory layout; the result is row-major).
    pub fn from_ndarray(a: &ArrayD<f32>) -> Tensor {
        let shape = a.shape().to_vec();
        let data: Vec<f32> = a.iter().copied().collect();
        Tensor::new(shape, data).expect("ndarray length matches its shape")
    }
}

/// A tensor with a name, as passed to and returned from model methods and executables.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// The tensor's name, e.g. `x`, `z`, `mean`.
    pub name: RString,
    /// The value.
    pub tensor: Tensor,
}

impl NamedTensor {
    /// Creates a named tensor.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> NamedTensor {
        NamedTensor {
            name: RString::from(name.into()),
            tensor,
        }
    }
}

/// Name, static shape and dtype of an input or output.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name of the tensor.
    pub name: RString,
    /// Static shape.
    pub shape: RVec<u64>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// Creates an `f32` spec.
    pub fn f32(name: impl Into<String>, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: RString::from(name.into()),
            shape: shape.iter().map(|&d| d as u64).collect(),
            dtype: DType::F32,
        }
    }
    /// The shape as `usize`s.
    pub fn shape(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_must_match_shape() {
        let e = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(e.message().contains("[2, 3]") && e.message().contains("got 5"));
        let t = Tensor::new(vec![2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let a = t.to_ndarray();
        assert_eq!(a[[1, 2]], 5.0);
        assert_eq!(Tensor::from_ndarray(&a), t);
    }

    #[test]
    fn a_shape_whose_product_wraps_is_refused() {
        // 2^50 * 4 * 64 * 64 wraps to 0 in unchecked usize arithmetic.
        let e = Tensor::new(vec![1 << 50, 4, 64, 64], Vec::new()).unwrap_err();
        assert!(
            e.message().contains("more elements than can be addressed"),
            "{e}"
        );
    }
}
