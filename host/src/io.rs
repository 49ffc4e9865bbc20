//! Reading inputs and writing outputs of `mlhost run`: safetensors files and PNG images.
//!
//! Images map `[0, 255]` to `[-1, 1]` (`x / 127.5 - 1`) as a `[1, C, H, W]` tensor, and back with
//! `round((clamp(v, -1, 1) + 1) * 127.5)`. Every output is written to a temporary file in the
//! destination directory and renamed into place.

use plugin_api::tensor::safetensors_header::check_header;
use plugin_api::tensor::shape_str;
use plugin_api::{NamedTensor, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file format `mlhost run` reads or writes, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.safetensors`: named tensors.
    SafeTensors,
    /// `.png`: one image.
    Png,
}

/// Errors reading or writing tensor files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The extension is neither `.safetensors` nor `.png`.
    #[error("{path}: unknown file extension (expected .safetensors or .png)")]
    UnknownExtension {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS or decoder message.
        reason: String,
    },
    /// The file was read but its content is unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor that was asked for is not in the file.
    #[error("{path} has no tensor `{name}` (it holds: {available})")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The missing tensor.
        name: String,
        /// The tensors it does hold.
        available: String,
    },
    /// The tensors cannot be written in this format.
    #[error("cannot write {path}: {reason}")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS or encoder message.
        reason: String,
    },
}

impl IoError {
    /// True if the user's file or choice of file is at fault (exit code 2).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, IoError::Write { .. })
    }
}

/// The format of `path`, from its extension (case-insensitive).
pub fn format_of(path: &Path) -> Result<Format, IoError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("safetensors") => Ok(Format::SafeTensors),
        Some("png") => Ok(Format::Png),
        _ => Err(IoError::UnknownExtension {
            path: path.to_path_buf(),
        }),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(|e| IoError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads tensor `name` from a safetensors file as `f32` (f16 and bf16 are upcast).
pub fn read_safetensors(path: &Path, name: &str) -> Result<Tensor, IoError> {
    let bytes = read_bytes(path)?;
    let invalid = |reason: String| IoError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    // Checked first so that a problem names its tensor (the crate's errors do not).
    check_header(&bytes).map_err(|e| invalid(format!("not a valid safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(format!("not a valid safetensors file: {e}")))?;
    let view = file.tensor(name).map_err(|_| {
        let mut names: Vec<&str> = file.names().into_iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        IoError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            available: if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            },
        }
    })?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(invalid(format!(
                "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
            )))
        }
    };
    Tensor::new(view.shape().to_vec(), values)
        .map_err(|e| invalid(format!("tensor `{name}`: {}", e.message())))
}

/// Largest image width or height decoded.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Most pixels an image may have (8192 x 8192): its dimensions are read from the file's header
/// and checked before anything is decoded, so that a small compressed file cannot claim
/// gigabytes (as RGB floats, the limit is 768 MiB, and 192 MiB of decoded bytes before that).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Decodes `bytes` as `format`: the header's width and height must be within
/// [`MAX_IMAGE_SIDE`] and [`MAX_IMAGE_PIXELS`] (checked before decoding), and the decoder may
/// allocate at most 1 GiB.
pub fn decode_image_bytes(
    bytes: &[u8],
    format: image::ImageFormat,
) -> Result<image::DynamicImage, String> {
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (w, h) = reader().into_dimensions().map_err(|e| e.to_string())?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(format!(
            "the image is {w} x {h} pixels; at most {MAX_IMAGE_PIXELS} pixels \
             ({MAX_IMAGE_SIDE} per side) are decoded"
        ));
    }
    let mut reader = reader();
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// `image` as a planar `[1, channels, H, W]` tensor (`channels` 3: RGB, 1: grayscale; other
/// pixel formats are converted), each 8-bit value `v` stored as `value(v)`. The decoded image
/// is consumed, not copied.
pub fn image_to_tensor(
    image: image::DynamicImage,
    channels: usize,
    value: impl Fn(u8) -> f32,
) -> Result<Tensor, String> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let interleaved: Vec<u8> = match channels {
        3 => image.into_rgb8().into_raw(),
        1 => image.into_luma8().into_raw(),
        c => {
            return Err(format!(
                "the model takes {c} input channels; an image gives 1 (grayscale) or 3 (RGB)"
            ))
        }
    };
    let plane = h * w;
    let mut data = vec![0.0f32; channels * plane];
    for (i, &v) in interleaved.iter().enumerate() {
        data[(i % channels) * plane + i / channels] = value(v);
    }
    Tensor::new(vec![1, channels, h, w], data).map_err(|e| e.message().to_string())
}

/// Reads a PNG as a `[1, channels, H, W]` tensor in `[-1, 1]`; `channels` is 3 (RGB) or 1
/// (grayscale); other pixel formats are converted.
pub fn read_png(path: &Path, channels: usize) -> Result<Tensor, IoError> {
    let bytes = read_bytes(path)?;
    let image = decode_image_bytes(&bytes, image::ImageFormat::Png).map_err(|e| IoError::Read {
        path: path.to_path_buf(),
        reason: format!("not a valid PNG: {e}"),
    })?;
    image_to_tensor(image, channels, |v| v as f32 / 127.5 - 1.0).map_err(|reason| {
        IoError::Invalid {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Writes named tensors as a safetensors file (`f32`), atomically.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<(), IoError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let raw = t
                .tensor
                .data()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (t.name.to_string(), t.tensor.shape(), raw)
        })
        .collect();
    let unwritable = |reason: String| IoError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, raw) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), raw)
            .map_err(|e| unwritable(format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let out = safetensors::serialize(views, &None).map_err(|e| unwritable(e.to_string()))?;
    write_atomically(path, &out)
}

/// Writes a `[1, C, H, W]` tensor (C = 1 or 3, values in `[-1, 1]`) as a PNG, atomically.
pub fn write_png(path: &Path, tensor: &Tensor) -> Result<(), IoError> {
    let unwritable = |reason: String| IoError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    let shape = tensor.shape();
    let [b, c, h, w] = shape[..] else {
        return Err(unwritable(format!(
            "a PNG holds one [1, C, H, W] image; got a tensor of shape {}",
            shape_str(&shape)
        )));
    };
    if b != 1 {
        return Err(unwritable(format!(
            "a PNG holds one image but the batch has {b} (shape {}); write .safetensors instead",
            shape_str(&shape)
        )));
    }
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => {
            return Err(unwritable(format!(
                "a PNG needs 1 or 3 channels; the tensor has {c} (shape {})",
                shape_str(&shape)
            )))
        }
    };
    let data = tensor.data();
    let mut pixels = vec![0u8; c * h * w];
    for (i, px) in pixels.iter_mut().enumerate() {
        let (pixel, ch) = (i / c, i % c);
        let v = data[ch * h * w + pixel];
        *px = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    }
    let mut encoded = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut encoded);
    image::ImageEncoder::write_image(encoder, &pixels, w as u32, h as u32, color).map_err(|e| {
        IoError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    write_atomically(path, &encoded)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let write_err = |reason: String| IoError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(IoError::Unwritable {
            path: path.to_path_buf(),
            reason: format!("directory {} does not exist", dir.display()),
        });
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mlhost-").suffix(".tmp");
    // A temp file is private (0600); the result is an ordinary output file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| write_err(e.to_string()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| write_err(e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| write_err(e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_decides_format() {
        assert_eq!(
            format_of(Path::new("a.SafeTensors")).unwrap(),
            Format::SafeTensors
        );
        assert_eq!(format_of(Path::new("dir/a.png")).unwrap(), Format::Png);
        let e = format_of(Path::new("a.npy")).unwrap_err();
        assert!(e.to_string().contains("a.npy") && e.to_string().contains("extension"));
    }

    #[test]
    fn safetensors_round_trip_and_missing_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::new(vec![1, 2, 1, 2], vec![0.5, -1.0, 2.0, 3.25]).unwrap();
        write_safetensors(&path, &[NamedTensor::new("mean", t.clone())]).unwrap();
        assert_eq!(read_safetensors(&path, "mean").unwrap(), t);
        let e = read_safetensors(&path, "x").unwrap_err().to_string();
        assert!(e.contains("no tensor `x`") && e.contains("mean") && e.contains("t.safetensors"));
    }

    #[test]
    fn f16_input_is_upcast() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        let raw: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F16, vec![2], &raw).unwrap();
        std::fs::write(&path, safetensors::serialize([("z", view)], &None).unwrap()).unwrap();
        assert_eq!(read_safetensors(&path, "z").unwrap().data(), &[1.5, -0.25]);
    }

    #[test]
    fn png_round_trip_maps_to_minus_one_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        // Channel planes: R = [-1, 1], G = [0, 0.5], B = [2 (clamped), -3 (clamped)].
        let t = Tensor::new(vec![1, 3, 1, 2], vec![-1.0, 1.0, 0.0, 0.5, 2.0, -3.0]).unwrap();
        write_png(&path, &t).unwrap();
        let back = read_png(&path, 3).unwrap();
        assert_eq!(back.shape(), vec![1, 3, 1, 2]);
        let expected = [0u8, 255, 128, 191, 255, 0].map(|v| v as f32 / 127.5 - 1.0);
        assert_eq!(back.data(), &expected);
        let gray = read_png(&path, 1).unwrap();
        assert_eq!(gray.shape(), vec![1, 1, 1, 2]);
    }

    #[test]
    fn png_refuses_batches_and_odd_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        let e = write_png(&path, &Tensor::zeros(vec![2, 3, 2, 2])).unwrap_err();
        assert!(e.to_string().contains("batch has 2"), "{e}");
        let e = write_png(&path, &Tensor::zeros(vec![1, 4, 2, 2])).unwrap_err();
        assert!(e.to_string().contains("4"), "{e}");
        assert!(!path.exists());
    }
}
